#!/usr/bin/env bash
# bench/cold-start.sh — time to first response from a stopped container:
# through berth vs. a shell baseline doing `docker start` + a tight curl loop.
#
# Setup: a berth image app /bench (image berth-bench-static = nginx + 13-byte
# index.html). Its first request creates the container. Then N rounds, order
# alternating each round, of:
#   baseline   berth's own container, stopped with `docker stop` and seen as
#              "stopped" by berth: t0; docker start <id>; read its published port
#              from the Engine API (that lookup is timed separately and
#              subtracted, berth's container gets a new ephemeral port on every
#              start); curl -s -o /dev/null -w '%{http_code}' in a loop, no
#              sleep, until 200.
#   api        like baseline, but the start is one Engine API call
#              (curl --unix-socket … POST /v1.41/containers/<id>/start): the
#              tightest shell lower bound, without the docker CLI's own startup.
#   fixed      the same loop on a script-owned container of the same image
#              with a fixed 127.0.0.1 port (no lookup needed): a cross-check.
#   berth      berth's container stopped (docker stop, then wait until
#              `berth app list --format json` says "stopped"); t0; one curl to
#              http://127.0.0.1:<berth>/bench/ (repeated only if it is not 200).
# Prints medians and berth's added ms (median berth - median baseline).
# Env: N=5  STOPPED_STATE=stopped  KEEP_TMP=1  BERTH_REBUILD=1
# Target: berth adds < 50 ms.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

N=${N:-5}
STOPPED_STATE=${STOPPED_STATE:-stopped}
TARGET_MS=50
DOCKER_SOCK=${DOCKER_HOST:-}; DOCKER_SOCK=${DOCKER_SOCK#unix://}; [ -S "${DOCKER_SOCK:-}" ] || DOCKER_SOCK=/var/run/docker.sock

bench_require_tools
bench_boost_self
bench_build_image
bench_ensure_berth
start_berth

create_app /bench --spec image --approve --param "image=$BENCH_IMAGE" --param port=80
BERTH_URL="http://127.0.0.1:$BERTH_HTTP_PORT/bench/"

code() { curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$1" || true; }

# first request: container create + start
t0=$(now_ms); c=""; deadline=$(( SECONDS + 60 ))
until [ "$c" = 200 ]; do
  (( SECONDS < deadline )) || die "berth /bench/ not 200 within 60 s (last code '$c')"
  c=$(code "$BERTH_URL"); [ "$c" = 200 ] || sleep 0.05
done
FIRST_MS=$(ms_since "$t0")
log "first request (create + start) through berth: $FIRST_MS ms"

mapfile -t CIDS < <(app_containers "$APP_ID")
[ "${#CIDS[@]}" -ge 1 ] || die "no container labelled berth.app.id=$APP_ID"
[ "${#CIDS[@]}" -eq 1 ] || log "note: ${#CIDS[@]} containers labelled berth.app.id=$APP_ID; using the running one"
CID=$(docker ps -q --no-trunc --filter "label=berth.app.id=$APP_ID" | head -1)
[ -n "$CID" ] || CID=${CIDS[0]}
log "berth container ${CID:0:12}: init=$(docker inspect -f '{{.HostConfig.Init}}' "$CID") ports=$(docker inspect -f '{{json .HostConfig.PortBindings}}' "$CID")"
docker inspect -f '{{json .HostConfig.PortBindings}}' "$CID" | grep -q '"HostIp":"127.0.0.1"' \
  || log "WARNING: berth's container is not published on 127.0.0.1 only: $(docker inspect -f '{{json .HostConfig.PortBindings}}' "$CID")"

FIXED_PORT=$(free_port)
FIXED=$(docker create --name "berth-bench-cold-$$" -p "127.0.0.1:$FIXED_PORT:80" "$BENCH_IMAGE")
CREATED_CONTAINERS+=("$FIXED")

wait_state() { # wait_state STATE : berth's view of /bench, bounded 20 s
  local s="" deadline=$(( SECONDS + 20 ))
  while (( SECONDS < deadline )); do
    s=$(app_field /bench state)
    [ "$s" = "$1" ] && return 0
    sleep 0.05
  done
  die "berth still reports state '$s' for /bench 20 s after docker stop (wanted '$1')"
}
stop_berth_container() {
  docker stop -t 10 "$CID" >/dev/null
  wait_state "$STOPPED_STATE"
  sleep 0.2   # let berth settle after the die event
}

# curl loop until 200, bounded; prints the number of attempts
curl_until_200() {
  local url=$1 n=0 deadline=$(( SECONDS + 30 ))
  while (( SECONDS < deadline )); do
    n=$((n + 1))
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$url" || true)" = 200 ] && { echo "$n"; return 0; }
  done
  return 1
}

declare -a R_BASE R_API R_FIXED R_BERTH R_LOOKUP
run_baseline() { # run_baseline ROUND [api]
  stop_berth_container
  local t0 t1 t2 port n
  t0=$(now_ms)
  if [ "${2:-}" = api ]; then
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST --unix-socket "$DOCKER_SOCK" "http://localhost/v1.41/containers/$CID/start")" = 204 ] \
      || die "Engine API start of $CID failed"
  else
    docker start "$CID" >/dev/null
  fi
  t1=$(now_ms)
  port=$(curl -s --unix-socket "$DOCKER_SOCK" "http://localhost/v1.41/containers/$CID/json" \
         | grep -o '"HostPort":"[0-9][0-9]*"' | head -1 | tr -dc 0-9)
  t2=$(now_ms)
  [ -n "$port" ] || die "baseline: no published port for $CID"
  n=$(curl_until_200 "http://127.0.0.1:$port/") || die "baseline: no 200 within 30 s"
  local total lookup; total=$(ms_since "$t0"); lookup=$(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')
  local v; v=$(awk -v t="$total" -v l="$lookup" 'BEGIN{printf "%.1f", t-l}')
  if [ "${2:-}" = api ]; then
    R_API+=("$v")
    log "$(printf 'round %d api:      %7.1f ms (start %.1f ms, port lookup %s ms excluded, %d curl attempts)' "$1" "$v" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$lookup" "$n")"
    return
  fi
  R_BASE+=("$v"); R_LOOKUP+=("$lookup")
  log "$(printf 'round %d baseline: %7.1f ms (start %.1f ms, port lookup %s ms excluded, %d curl attempts)' "$1" "${R_BASE[-1]}" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$lookup" "$n")"
}
run_fixed() {
  docker stop -t 10 "$FIXED" >/dev/null 2>&1 || true
  local t0 n
  t0=$(now_ms)
  docker start "$FIXED" >/dev/null
  n=$(curl_until_200 "http://127.0.0.1:$FIXED_PORT/") || die "fixed baseline: no 200 within 30 s"
  R_FIXED+=("$(ms_since "$t0")")
  log "$(printf 'round %d fixed:    %7.1f ms (%d curl attempts)' "$1" "${R_FIXED[-1]}" "$n")"
  docker stop -t 10 "$FIXED" >/dev/null
}
run_berth() {
  stop_berth_container
  local t0 n
  t0=$(now_ms)
  n=$(curl_until_200 "$BERTH_URL") || die "berth: no 200 within 30 s"
  R_BERTH+=("$(ms_since "$t0")")
  log "$(printf 'round %d berth:    %7.1f ms (%d curl%s)' "$1" "${R_BERTH[-1]}" "$n" "$([ "$n" = 1 ] && echo "" || echo "s: berth answered non-200 first")")"
  [ "$n" = 1 ] || BERTH_NON200=1
}

QUIET_NOTE=$(quiet_note); log "$QUIET_NOTE"
for i in $(seq 1 "$N"); do
  if (( i % 2 )); then run_baseline "$i"; run_baseline "$i" api; run_fixed "$i"; run_berth "$i"
  else                 run_berth "$i"; run_fixed "$i"; run_baseline "$i" api; run_baseline "$i"; fi
done
kill -0 "$BERTH_PID" 2>/dev/null || die "berth died during the benchmark (see $BENCH_TMP/berth-server.log)"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if(NR%2){print a[(NR+1)/2]} else {printf "%.1f\n",(a[NR/2]+a[NR/2+1])/2}}'; }
M_BASE=$(median "${R_BASE[@]}"); M_API=$(median "${R_API[@]}"); M_FIXED=$(median "${R_FIXED[@]}"); M_BERTH=$(median "${R_BERTH[@]}")
echo
echo "== bench/cold-start.sh  $(date -u '+%F %T UTC')  $(nproc) cores, Docker $(docker version --format '{{.Server.Version}}'), N=$N, image $BENCH_IMAGE"
printf '%-34s %10s   %s\n' "" "median ms" "all runs (ms)"
printf '%-34s %10s   %s\n' "baseline: docker start + curl loop" "$M_BASE" "${R_BASE[*]}"
printf '%-34s %10s   %s\n' "  (Engine API port lookup, excl.)" "$(median "${R_LOOKUP[@]}")" "${R_LOOKUP[*]}"
printf '%-34s %10s   %s\n' "Engine API start + curl loop" "$M_API" "${R_API[*]}"
printf '%-34s %10s   %s\n' "fixed-port container, same loop" "$M_FIXED" "${R_FIXED[*]}"
printf '%-34s %10s   %s\n' "berth: one curl via berth" "$M_BERTH" "${R_BERTH[*]}"
echo "first request through berth (create + start): $FIRST_MS ms"
[ -n "${BERTH_NON200:-}" ] && echo "NOTE: berth answered non-200 on some cold requests (see log lines above)"
echo "$QUIET_NOTE"
[ "$BENCH_NICE" = 0 ] || echo "bench shell, curl and berth ran at nice $BENCH_NICE; the Docker daemons at their normal priority"
echo
awk -v b="$M_BERTH" -v s="$M_BASE" -v f="$M_FIXED" -v a="$M_API" -v t="$TARGET_MS" 'BEGIN{
  d = b - s
  printf "RATIO berth cold start = %.1f ms vs baseline %.1f ms: berth adds %+.1f ms (%.2fx) (target < %d ms: %s); vs Engine API start %+.1f ms; vs fixed-port container %+.1f ms\n",
    b, s, d, b/s, t, (d < t ? "PASS" : "FAIL"), b - a, b - f }'
