#!/usr/bin/env bash
# bench/cold-start.sh — time to first response of an idle app, through berth vs.
# the tightest shell baselines, for nginx and for a Streamlit app built by berth.
#
# Apps (all in a private BERTH_HOME, berth on free 127.0.0.1 ports):
#   /bench  image berth-bench-static (nginx + 13-byte index.html), idle = stopped
#           (--conf container.stop_paused_after_secs=0)
#   /benchp the same image, --conf container.idle_shutdown_secs=1: berth pauses it
#   /st     python-streamlit, source tests/fixtures/apps/python-streamlit, idle = stopped
#   /stp    the same Streamlit app, --conf container.idle_shutdown_secs=1: paused
# The health path is "/" for nginx and the spec's health_url for Streamlit
# (/_stcore/health under its base path: /st/_stcore/health). Each app's first
# request creates its container; for Streamlit it first builds the image (pip
# installs streamlit: minutes the first time, cached by docker afterwards).
#
# N rounds, interleaved (the order of every pair flips each round):
# start from stopped (the /bench and /st containers, stopped with `docker stop`,
# then waited on until `berth app list --format json` says "stopped"):
#   baseline   docker start <id>; the published port is read from the Engine API
#              (timed separately and subtracted: berth's container gets a new
#              ephemeral port on every start); curl in a loop, no sleep, until 200.
#              nginx only.
#   api        like baseline, but the start is one Engine API call
#              (curl --unix-socket … POST /v1.41/containers/<id>/start): the
#              tightest shell lower bound, without the docker CLI's own startup.
#   fixed      the same loop on a script-owned container of the same image with a
#              fixed 127.0.0.1 port (no lookup needed): a cross-check. nginx only.
#   berth      t0; one curl through berth (repeated only if it is not 200).
# wake from paused (the /benchp and /stp containers, paused by berth itself after
# 1 s idle, seen as "paused" in `berth app list --format json`):
#   unpause    Engine API unpause (POST /v1.41/containers/<id>/unpause) + the
#              no-sleep curl loop on its fixed 127.0.0.1 port, then paused again
#              (untimed), on a script-owned "shadow" copy of berth's container
#              (same image, env, init and container port). Not berth's own
#              container: berth re-pauses that one at once after an unpause it
#              did not make (its idle clock is older than idle_shutdown_secs).
#   wake       berth's own container, paused by berth (if berth has not paused
#              it within 10 s, the script pauses it through the Engine API);
#              t0; one curl through berth.
# Prints medians and PASS/FAIL per target of issue 8:
#   berth wake from paused < 40 ms;  berth start from stopped within 10 ms of the
#   Engine API start + curl loop.
# Env: N=5  STREAMLIT=1 (0: nginx only)  KEEP_TMP=1  BERTH_REBUILD=1  BERTH_BIN
#      FIRST_TIMEOUT=1200 (s, bound on a first request, i.e. the Streamlit build)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

N=${N:-5}
STREAMLIT=${STREAMLIT:-1}
FIRST_TIMEOUT=${FIRST_TIMEOUT:-1200}
WAKE_TARGET_MS=40
START_TARGET_MS=10
DOCKER_SOCK=${DOCKER_HOST:-}; DOCKER_SOCK=${DOCKER_SOCK#unix://}; [ -S "${DOCKER_SOCK:-}" ] || DOCKER_SOCK=/var/run/docker.sock
STREAMLIT_SRC="$ROOT_DIR/tests/fixtures/apps/python-streamlit"

bench_require_tools
bench_boost_self
bench_build_image
bench_ensure_berth
start_berth

# Per-app facts, keyed by a short name: mount path, berth URL, health path on the
# container's own port, berth app id, container id.
declare -A A_PATH A_URL A_HEALTH A_ID A_CID A_FIRST

api() { # api METHOD PATH : Engine API call over the unix socket; prints the HTTP code
  curl -s -o /dev/null -w '%{http_code}' -X "$1" --unix-socket "$DOCKER_SOCK" "http://localhost/v1.41$2" || true
}
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$1" || true; }

# add_app KEY SOURCE PATH HEALTH CREATE-ARGS... : create it, make its first
# request (bounded by FIRST_TIMEOUT), record its container
add_app() {
  local key=$1 src=$2 path=$3 health=$4; shift 4
  create_app_from "$src" "$path" "$@"
  A_PATH[$key]=$path; A_ID[$key]=$APP_ID; A_HEALTH[$key]=$health
  A_URL[$key]="http://127.0.0.1:$BERTH_HTTP_PORT$health"
  [ "$health" = / ] && A_URL[$key]="http://127.0.0.1:$BERTH_HTTP_PORT$path/"
  local t0 c="" deadline=$(( SECONDS + FIRST_TIMEOUT ))
  t0=$(now_ms)
  until [ "$c" = 200 ]; do
    (( SECONDS < deadline )) || die "berth ${A_URL[$key]} not 200 within $FIRST_TIMEOUT s (last code '$c'; see $BENCH_TMP/berth-server.log)"
    c=$(code "${A_URL[$key]}"); [ "$c" = 200 ] || sleep 0.2
  done
  A_FIRST[$key]=$(ms_since "$t0")
  log "$key: first request (create$([ "$health" = / ] || echo ", build") + start) through berth: ${A_FIRST[$key]} ms"
  local cid; cid=$(docker ps -q --no-trunc --filter "label=berth.app.id=$APP_ID" | head -1)
  [ -n "$cid" ] || die "$key: no running container labelled berth.app.id=$APP_ID"
  A_CID[$key]=$cid
  docker inspect -f '{{json .HostConfig.PortBindings}}' "$cid" | grep -q '"HostIp":"127.0.0.1"' \
    || log "WARNING: $key's container is not published on 127.0.0.1 only: $(docker inspect -f '{{json .HostConfig.PortBindings}}' "$cid")"
}

published_port() { # published_port CID : its first published host port, from the Engine API
  curl -s --unix-socket "$DOCKER_SOCK" "http://localhost/v1.41/containers/$1/json" \
    | grep -o '"HostPort":"[0-9][0-9]*"' | head -1 | tr -dc 0-9
}

wait_state() { # wait_state KEY STATE [timeout_s] : berth's view of the app, bounded
  local s="" deadline=$(( SECONDS + ${3:-30} ))
  while (( SECONDS < deadline )); do
    s=$(app_field "${A_PATH[$1]}" state)
    [ "$s" = "$2" ] && return 0
    sleep 0.05
  done
  return 1
}
stop_app_container() { # stop_app_container KEY
  docker stop -t 10 "${A_CID[$1]}" >/dev/null
  wait_state "$1" stopped 30 || die "berth does not report $1 stopped 30 s after docker stop"
  sleep 0.2   # let berth settle after the die event
}
ensure_paused() { # ensure_paused KEY : berth paused it (idle 1 s); if not within 10 s, pause via the Engine API
  wait_state "$1" paused 10 && { sleep 0.2; return 0; }
  local c; c=$(api POST "/containers/${A_CID[$1]}/pause")
  [ "$c" = 204 ] || log "note: Engine API pause of $1 answered $c"
  wait_state "$1" paused 30 || die "berth does not report $1 paused (state '$(app_field "${A_PATH[$1]}" state)')"
  sleep 0.2
}

# curl loop until 200, bounded; prints the number of attempts; the codes of
# non-200 answers (000: no connection) are appended to $BENCH_TMP/non200, and an
# HTTP answer other than 200 is logged with the start of its body
curl_until_200() {
  local url=$1 n=0 c deadline=$(( SECONDS + 30 ))
  while (( SECONDS < deadline )); do
    n=$((n + 1))
    c=$(curl -s -o "$BENCH_TMP/body" -w '%{http_code}' --max-time 10 "$url" || true)
    [ "$c" = 200 ] && { echo "$n"; return 0; }
    echo "$c" >>"$BENCH_TMP/non200"
    [ "$c" = 000 ] || log "  $url answered $c: $(head -c 300 "$BENCH_TMP/body" 2>/dev/null | tr '\n' ' ')"
  done
  return 1
}
non200_codes() { # the non-200 codes since the last call, e.g. "503 502"
  [ -f "$BENCH_TMP/non200" ] || return 0
  sort "$BENCH_TMP/non200" | uniq -c | awk '{printf "%s%s x%s", (NR>1?", ":""), $2, $1}'
  rm -f "$BENCH_TMP/non200"
}

declare -A R      # R[KEY.kind] = space-separated ms values
declare -a R_LOOKUP
record() { R[$1]="${R[$1]:-} $2"; }

run_start_baseline() { # run_start_baseline ROUND KEY docker|api
  local key=$2 kind=$3 cid=${A_CID[$2]}
  stop_app_container "$key"
  local t0 t1 t2 port n
  t0=$(now_ms)
  if [ "$kind" = api ]; then
    [ "$(api POST "/containers/$cid/start")" = 204 ] || die "Engine API start of $cid failed"
  else
    docker start "$cid" >/dev/null
  fi
  t1=$(now_ms)
  port=$(published_port "$cid")
  t2=$(now_ms)
  [ -n "$port" ] || die "$key $kind: no published port for $cid"
  n=$(curl_until_200 "http://127.0.0.1:$port${A_HEALTH[$key]}") || die "$key $kind: no 200 within 30 s"
  local total lookup v
  total=$(ms_since "$t0"); lookup=$(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')
  v=$(awk -v t="$total" -v l="$lookup" 'BEGIN{printf "%.1f", t-l}')
  record "$key.$kind" "$v"
  if [ "$kind" = docker ]; then R_LOOKUP+=("$lookup"); fi
  log "$(printf 'round %d %-5s %-6s start:   %7.1f ms (start call %.1f ms, port lookup %s ms excluded, %d curl attempts)' \
        "$1" "$key" "$kind" "$v" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$lookup" "$n")"
}
run_fixed() { # run_fixed ROUND : nginx only
  docker stop -t 10 "$FIXED" >/dev/null 2>&1 || true
  local t0 n
  t0=$(now_ms)
  docker start "$FIXED" >/dev/null
  n=$(curl_until_200 "http://127.0.0.1:$FIXED_PORT/") || die "fixed baseline: no 200 within 30 s"
  record ngx.fixed "$(ms_since "$t0")"
  log "$(printf 'round %d ngx   fixed  start:   %7.1f ms (%d curl attempts)' "$1" "${R[ngx.fixed]##* }" "$n")"
  docker stop -t 10 "$FIXED" >/dev/null
}
run_berth_start() { # run_berth_start ROUND KEY
  stop_app_container "$2"
  local t0 n
  t0=$(now_ms)
  rm -f "$BENCH_TMP/non200"
  n=$(curl_until_200 "${A_URL[$2]}") || die "$2 berth: no 200 within 30 s"
  record "$2.berth" "$(ms_since "$t0")"
  log "$(printf 'round %d %-5s berth  start:   %7.1f ms (%d curl%s)' "$1" "$2" "${R[$2.berth]##* }" "$n" "$([ "$n" = 1 ] && echo "" || echo "s: berth answered $(non200_codes) first")")"
  [ "$n" = 1 ] || BERTH_NON200=1
}
# shadow_container KEY : a script-owned copy of KEY's container (same image, env,
# init and container port; a fixed 127.0.0.1 port), started, answering 200, then
# paused through the Engine API. berth does not know it, so an external unpause
# of it is not raced by berth's idle timer (berth re-pauses its own container at
# once after an unpause it did not make: it was idle for longer than 1 s).
declare -A S_CID S_PORT
shadow_container() {
  local key=$1 cid=${A_CID[$1]} image cport init env_args=() e port
  image=$(docker inspect -f '{{.Image}}' "$cid")
  cport=$(docker inspect -f '{{range $p, $b := .HostConfig.PortBindings}}{{$p}} {{end}}' "$cid" | awk '{print $1}')
  init=$(docker inspect -f '{{.HostConfig.Init}}' "$cid")
  while IFS= read -r e; do [ -n "$e" ] && env_args+=(-e "$e"); done \
    < <(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$cid")
  port=$(free_port)
  S_CID[$key]=$(docker create --name "berth-bench-cold-$key-$$" $([ "$init" = true ] && echo --init) \
                  "${env_args[@]}" -p "127.0.0.1:$port:$cport" "$image")
  CREATED_CONTAINERS+=("${S_CID[$key]}"); S_PORT[$key]=$port
  docker start "${S_CID[$key]}" >/dev/null
  curl_until_200 "http://127.0.0.1:$port${A_HEALTH[$key]}" >/dev/null || die "$key shadow container: no 200 within 30 s"
  [ "$(api POST "/containers/${S_CID[$key]}/pause")" = 204 ] || die "Engine API pause of the $key shadow container failed"
  log "$key: shadow container ${S_CID[$key]:0:12} (image ${image:7:12}, port 127.0.0.1:$port->$cport) paused"
}
run_unpause_baseline() { # run_unpause_baseline ROUND KEY : on the shadow container
  local key=$2 cid=${S_CID[$2]} t0 n
  t0=$(now_ms)
  [ "$(api POST "/containers/$cid/unpause")" = 204 ] || die "Engine API unpause of $cid failed"
  n=$(curl_until_200 "http://127.0.0.1:${S_PORT[$key]}${A_HEALTH[$key]}") || die "$key unpause: no 200 within 30 s"
  record "$key.unpause" "$(ms_since "$t0")"
  log "$(printf 'round %d %-5s api    unpause: %7.1f ms (%d curl attempts)' "$1" "$key" "${R[$key.unpause]##* }" "$n")"
  [ "$(api POST "/containers/$cid/pause")" = 204 ] || die "Engine API pause of $cid failed"
  sleep 0.2
}
run_berth_wake() { # run_berth_wake ROUND KEY
  ensure_paused "$2"
  local t0 n
  t0=$(now_ms)
  rm -f "$BENCH_TMP/non200"
  n=$(curl_until_200 "${A_URL[$2]}") || die "$2 berth wake: no 200 within 30 s"
  record "$2.wake" "$(ms_since "$t0")"
  log "$(printf 'round %d %-5s berth  wake:    %7.1f ms (%d curl%s)' "$1" "$2" "${R[$2.wake]##* }" "$n" "$([ "$n" = 1 ] && echo "" || echo "s: berth answered $(non200_codes) first")")"
  [ "$n" = 1 ] || BERTH_NON200=1
}

add_app ngx  - /bench  / --spec image --approve --param "image=$BENCH_IMAGE" --param port=80 --conf container.stop_paused_after_secs=0
add_app ngxp - /benchp / --spec image --approve --param "image=$BENCH_IMAGE" --param port=80 --conf container.idle_shutdown_secs=1
KEYS_STOP=(ngx); KEYS_PAUSE=(ngxp)
if [ "$STREAMLIT" = 1 ]; then
  [ -d "$STREAMLIT_SRC" ] || die "no Streamlit fixture at $STREAMLIT_SRC"
  add_app st  "$STREAMLIT_SRC" /st  /st/_stcore/health  --spec python-streamlit --approve --conf container.stop_paused_after_secs=0
  add_app stp "$STREAMLIT_SRC" /stp /stp/_stcore/health --spec python-streamlit --approve --conf container.idle_shutdown_secs=1
  KEYS_STOP+=(st); KEYS_PAUSE+=(stp)
fi
for k in "${KEYS_PAUSE[@]}"; do shadow_container "$k"; done

FIXED_PORT=$(free_port)
FIXED=$(docker create --name "berth-bench-cold-$$" -p "127.0.0.1:$FIXED_PORT:80" "$BENCH_IMAGE")
CREATED_CONTAINERS+=("$FIXED")

# sample the load only once the apps have settled (the paused ones paused by berth),
# so the note shows other work and not this run's own start-ups
for k in "${KEYS_PAUSE[@]}"; do ensure_paused "$k"; done
QUIET_NOTE=$(quiet_note); log "$QUIET_NOTE"
for i in $(seq 1 "$N"); do
  for k in "${KEYS_STOP[@]}"; do
    if (( i % 2 )); then
      if [ "$k" = ngx ]; then run_start_baseline "$i" "$k" docker; run_fixed "$i"; fi
      run_start_baseline "$i" "$k" api; run_berth_start "$i" "$k"
    else
      run_berth_start "$i" "$k"; run_start_baseline "$i" "$k" api
      if [ "$k" = ngx ]; then run_fixed "$i"; run_start_baseline "$i" "$k" docker; fi
    fi
  done
  for k in "${KEYS_PAUSE[@]}"; do
    if (( i % 2 )); then run_unpause_baseline "$i" "$k"; run_berth_wake "$i" "$k"
    else                 run_berth_wake "$i" "$k"; run_unpause_baseline "$i" "$k"; fi
  done
done
kill -0 "$BERTH_PID" 2>/dev/null || die "berth died during the benchmark (see $BENCH_TMP/berth-server.log)"

median() { printf '%s\n' "$@" | sort -g | awk 'NF{a[++n]=$1} END{if(n%2){print a[(n+1)/2]} else {printf "%.1f\n",(a[n/2]+a[n/2+1])/2}}'; }
# shellcheck disable=SC2086
med() { median ${R[$1]}; }
row() { printf '%-44s %10s   %s\n' "$1" "$(med "$2")" "${R[$2]# }"; }
echo
echo "== bench/cold-start.sh  $(date -u '+%F %T UTC')  $(nproc) cores, Docker $(docker version --format '{{.Server.Version}}'), N=$N, image $BENCH_IMAGE$([ "$STREAMLIT" = 1 ] && echo ", Streamlit $(docker exec "${A_CID[st]}" streamlit version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1)")"
printf '%-44s %10s   %s\n' "" "median ms" "all runs (ms)"
echo "-- nginx: start from stopped"
row "baseline: docker start + curl loop" ngx.docker
printf '%-44s %10s   %s\n' "  (Engine API port lookup, excl.)" "$(median "${R_LOOKUP[@]}")" "${R_LOOKUP[*]}"
row "Engine API start + curl loop" ngx.api
row "fixed-port container, docker start + loop" ngx.fixed
row "berth: one curl via berth" ngx.berth
echo "-- nginx: wake from paused"
row "Engine API unpause + curl loop" ngxp.unpause
row "berth: one curl via berth" ngxp.wake
if [ "$STREAMLIT" = 1 ]; then
  echo "-- Streamlit (/_stcore/health): start from stopped"
  row "Engine API start + curl loop" st.api
  row "berth: one curl via berth" st.berth
  echo "-- Streamlit (/_stcore/health): wake from paused"
  row "Engine API unpause + curl loop" stp.unpause
  row "berth: one curl via berth" stp.wake
fi
# berth's own view from its log: how long its engine unpause call took, and the
# container start to ready (first requests included)
log_took_ms() { grep -a "$1" "$BENCH_TMP/berth-server.log" | grep -o 'took_ms=[0-9]*' | cut -d= -f2 | tr '\n' ' '; }
UNPAUSE_TOOK=$(log_took_ms 'container unpaused'); READY_TOOK=$(log_took_ms 'container ready')
# shellcheck disable=SC2086
[ -z "$UNPAUSE_TOOK" ] || printf '%-44s %10s   %s\n' "(berth log: engine unpause call took)" "$(median $UNPAUSE_TOOK)" "$UNPAUSE_TOOK"
# shellcheck disable=SC2086
[ -z "$READY_TOOK" ] || printf '%-44s %10s   %s\n' "(berth log: start to ready took, all apps)" "$(median $READY_TOOK)" "$READY_TOOK"
for k in "${!A_FIRST[@]}"; do echo "first request through berth ($k, create$([ "${A_HEALTH[$k]}" = / ] || echo " + build") + start): ${A_FIRST[$k]} ms"; done | sort
[ -n "${BERTH_NON200:-}" ] && echo "NOTE: berth answered non-200 on some requests (see log lines above)"
echo "$QUIET_NOTE"
[ "$BENCH_NICE" = 0 ] || echo "bench shell, curl and berth ran at nice $BENCH_NICE; the Docker daemons at their normal priority"
echo
wake_line() { # wake_line NAME KEY
  awk -v n="$1" -v b="$(med "$2.wake")" -v u="$(med "$2.unpause")" -v t="$WAKE_TARGET_MS" 'BEGIN{
    printf "RATIO %s wake from paused: berth %.1f ms (target < %d ms: %s); Engine API unpause + curl loop %.1f ms, berth %+.1f ms (%.2fx)\n",
      n, b, t, (b < t ? "PASS" : "FAIL"), u, b - u, b/u }'
}
start_line() { # start_line NAME KEY
  awk -v n="$1" -v b="$(med "$2.berth")" -v a="$(med "$2.api")" -v t="$START_TARGET_MS" 'BEGIN{
    d = b - a
    printf "RATIO %s start from stopped: berth %.1f ms vs Engine API start + curl loop %.1f ms: berth %+.1f ms (%.2fx) (target within %d ms: %s)\n",
      n, b, a, d, b/a, t, (d <= t ? "PASS" : "FAIL") }'
}
wake_line nginx ngxp
start_line nginx ngx
awk -v b="$(med ngx.berth)" -v s="$(med ngx.docker)" -v f="$(med ngx.fixed)" 'BEGIN{
  printf "      nginx start: berth vs docker start + curl loop %+.1f ms (%.2fx); vs fixed-port container %+.1f ms\n", b - s, b/s, b - f }'
if [ "$STREAMLIT" = 1 ]; then
  wake_line Streamlit stp
  start_line Streamlit st
fi
