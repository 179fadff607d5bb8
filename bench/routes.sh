#!/usr/bin/env bash
# bench/routes.sh — does routing cost depend on the number of apps?
#
# Upstream: a private nginx on 127.0.0.1 serving a 13-byte file (no container).
#   1. berth with ONE proxy app (/app-00001 -> that nginx): wrk, ROUNDS rounds,
#      each round also loads the nginx directly (the machine's reference).
#   2. 9,999 more proxy apps on the same domain (/app-00002 … /app-10000),
#      created through the CLI, PARALLEL calls at a time; the time is reported.
#   3. The LAST-created app measured like step 1, rounds interleaved with a second
#      berth (own home, one proxy app) so both see the same background load.
#      RATIO last-of-10000 / one-app req/s (target >= 0.95), same server before/after;
#      INTERLEAVED: the same ratio against the second berth, same moments.
#   4. berth restarted with the 10,000 apps: time from spawn to the admin socket
#      answering and to the first proxied 200 (targets < 1 s), idle RSS (< 60 MB).
# Best round = highest req/s (background load only ever slows a round down);
# medians and the "vs direct nginx" ratio of each phase are shown next to it.
# Env: APPS=10000 PARALLEL=4 DURATION=3s WARMUP=1s THREADS=2 CONNS=50 ROUNDS=3
#      KEEP_TMP=1 (keep logs)  BERTH_REBUILD=1  BERTH_BIN=...  BENCH_NICE=-10
set -euo pipefail
source "$(dirname "$0")/lib.sh"
REF_PID="" # the second berth (one app), for interleaved rounds
stop_ref() {
  [ -n "$REF_PID" ] && kill -0 "$REF_PID" 2>/dev/null || return 0
  kill -TERM "$REF_PID"
  for _ in $(seq 1 100); do kill -0 "$REF_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$REF_PID" 2>/dev/null || true
  wait "$REF_PID" 2>/dev/null || true
  REF_PID=""
}
trap 'rc=$?; stop_ref; (exit $rc); bench_cleanup' EXIT
trap 'exit 130' INT TERM

APPS=${APPS:-10000}
PARALLEL=${PARALLEL:-4}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
ROUNDS=${ROUNDS:-3}
EXPECTED_BODY='hello, berth'
(( APPS >= 2 && APPS <= 99999 )) || die "APPS must be 2..99999"
app_name() { printf '/app-%05d' "$1"; }

bench_require_tools wrk nginx
bench_boost_self
bench_ensure_berth

# --- upstream: private nginx serving a small file ------------------------------------
NGINX_PORT=$(free_port)
static_upstream_conf "$BENCH_TMP/nginx" "$NGINX_PORT" "$EXPECTED_BODY"
start_private_nginx
UP_URL="http://127.0.0.1:$NGINX_PORT"
wait_http "$UP_URL/" 10 || die "private nginx not answering"
log "private nginx (pid $NGINX_PID) on 127.0.0.1:$NGINX_PORT"

start_berth
SOCKET="$BERTH_HOME_DIR/run/berth.sock"
FIRST=$(app_name 1)
LAST=$(app_name "$APPS")
create_app "$FIRST" --spec proxy --param "url=$UP_URL"
FIRST_URL="http://127.0.0.1:$BERTH_HTTP_PORT$FIRST/"
LAST_URL="http://127.0.0.1:$BERTH_HTTP_PORT$LAST/"
wait_http "$FIRST_URL" 10 || { curl -si "$FIRST_URL" >&2 || true; die "$FIRST does not answer 200"; }

# --- load ------------------------------------------------------------------------------
declare -A RES
CLK_TCK=$(getconf CLK_TCK)
# run_one LABEL URL ROUND : wrk, plus the berth's CPU time per request (µs)
run_one() {
  local label=$1 url=$2 r=$3 out body pid="" c0 c1
  case "$label" in direct-*) ;; ref-*) pid=$REF_PID ;; *) pid=$BERTH_PID ;; esac
  body=$(curl -s --max-time 5 "$url") || true
  [ "$body" = "$EXPECTED_BODY" ] || die "$label: $url answers '$body', expected '$EXPECTED_BODY'"
  wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "$url" >/dev/null 2>&1 || true
  c0=$(cpu_ticks $pid)
  out=$(timeout 120 wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$BENCH_DIR/wrk-report.lua" "$url")
  c1=$(cpu_ticks $pid)
  echo "$out" >"$BENCH_TMP/wrk-$label-$r.txt"
  local line; line=$(grep '^WRKRESULT' <<<"$out") || die "$label: no wrk result"
  local kv; for kv in ${line#WRKRESULT }; do RES[$label,$r,${kv%%=*}]=${kv#*=}; done
  local errs=$(( RES[$label,$r,non2xx] + RES[$label,$r,connect_err] + RES[$label,$r,read_err] + RES[$label,$r,write_err] + RES[$label,$r,timeout_err] ))
  RES[$label,$r,errors]=$errs
  RES[$label,$r,cpu_us]=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="${RES[$label,$r,requests]}" -v p="$pid" \
    'BEGIN{ if (p != "" && n > 0) printf "%.1f", d/hz*1e6/n; else print 0 }')
  log "$(printf '%-11s round %d: %10.1f req/s  p50 %.3f ms  p99 %.3f ms  berth CPU %s µs/req  errors %d' \
      "$label" "$r" "${RES[$label,$r,rps]}" "${RES[$label,$r,p50_ms]}" "${RES[$label,$r,p99_ms]}" "${RES[$label,$r,cpu_us]}" "$errs")"
}
# agg max|median LABEL KEY
agg() {
  local f=$1 label=$2 k=$3 r v=""
  for r in $(seq 1 "$ROUNDS"); do v+="${RES[$label,$r,$k]} "; done
  tr ' ' '\n' <<<"$v" | grep -v '^$' | sort -g | awk -v m="$f" '{a[NR]=$1} END{
    if (m == "max") print a[NR]; else if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'
}
errors_of() { local label=$1 r n=0; for r in $(seq 1 "$ROUNDS"); do n=$(( n + RES[$label,$r,errors] )); done; echo "$n"; }
# phase NAME BERTH_URL [REF_URL] : ROUNDS rounds of (direct nginx, [second berth,] berth)
phase() {
  local r
  for r in $(seq 1 "$ROUNDS"); do
    run_one "direct-$1" "$UP_URL/" "$r"
    [ -z "${3:-}" ] || run_one "ref-$1" "$3" "$r"
    run_one "$1" "$2" "$r"
  done
}

NOTE_ONE=$(quiet_note); log "one app: $NOTE_ONE"
log "load: wrk -t$THREADS -c$CONNS -d$DURATION (warm-up $WARMUP), $ROUNDS rounds, each: direct nginx then berth"
phase one "$FIRST_URL"

# --- 10,000 apps --------------------------------------------------------------------------
log "creating $((APPS - 1)) more proxy apps ($PARALLEL parallel CLI calls)"
export BERTH_HOME="$BERTH_HOME_DIR"
t0=$(now_ms)
# each call: berth app create --spec proxy --param url=... - /app-NNNNN ; bounded by timeout
seq 2 "$APPS" | timeout 1800 xargs -P "$PARALLEL" -I{} sh -c \
  'p=$(printf "/app-%05d" {}); "$0" app create --spec proxy --param "url=$1" - "$p" >/dev/null 2>>"$2" || echo "create $p failed" >>"$2"' \
  "$BERTH_BIN" "$UP_URL" "$BENCH_TMP/create-errors.log" \
  || die "creating apps failed or timed out (see $BENCH_TMP/create-errors.log)"
CREATE_MS=$(ms_since "$t0")
! grep -q . "$BENCH_TMP/create-errors.log" 2>/dev/null || { head -5 "$BENCH_TMP/create-errors.log" >&2; die "some app creates failed"; }
N=$(berth app list --format json | jq length)
[ "$N" = "$APPS" ] || die "app list shows $N apps, expected $APPS"
log "$APPS apps exist; creating $((APPS - 1)) took $CREATE_MS ms"
BERTH_RSS_LOADED_KB=$(awk '/^VmRSS/{print $2}' "/proc/$BERTH_PID/status")

# the second berth: own home and ports (HTTPS off), one proxy app at the same path as the first
REF_HOME="$BENCH_TMP/berth-ref"; mkdir -p "$REF_HOME"
REF_PORT=$(free_port)
while [ "$REF_PORT" = "$BERTH_HTTP_PORT" ] || [ "$REF_PORT" = "$BERTH_HTTPS_PORT" ]; do REF_PORT=$(free_port); done
printf '[http]\nhost = "127.0.0.1"\nport = %s\n[https]\nport = -1\n' "$REF_PORT" >"$REF_HOME/berth.toml"
BERTH_HOME="$REF_HOME" "$BERTH_BIN" server start >"$BENCH_TMP/berth-ref.log" 2>&1 &
REF_PID=$!
deadline=$(( SECONDS + 30 ))
until BERTH_HOME="$REF_HOME" "$BERTH_BIN" app list >/dev/null 2>&1; do
  kill -0 "$REF_PID" 2>/dev/null || { tail -20 "$BENCH_TMP/berth-ref.log" >&2; REF_PID=""; die "second berth exited"; }
  (( SECONDS < deadline )) || die "second berth not ready after 30 s"
  sleep 0.1
done
BERTH_HOME="$REF_HOME" "$BERTH_BIN" app create --spec proxy --param "url=$UP_URL" - "$FIRST" >/dev/null \
  || die "second berth: app create failed"
REF_URL="http://127.0.0.1:$REF_PORT$FIRST/"
wait_http "$REF_URL" 10 || die "second berth's app does not answer 200"
log "second berth (one app, pid $REF_PID) on 127.0.0.1:$REF_PORT"

NOTE_MANY=$(quiet_note); log "$APPS apps: $NOTE_MANY"
phase many "$LAST_URL" "$REF_URL"
stop_ref

# --- restart with 10,000 apps ---------------------------------------------------------------
log "restarting berth with $APPS apps"
kill -TERM "$BERTH_PID"
for _ in $(seq 1 100); do kill -0 "$BERTH_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$BERTH_PID" 2>/dev/null && die "berth did not stop within 10 s of SIGTERM"
wait "$BERTH_PID" 2>/dev/null || true
BERTH_PID=""
NOTE_START=$(quiet_note); log "restart: $NOTE_START"
t0=$(now_ms)
"$BERTH_BIN" server start >>"$BENCH_TMP/berth-server.log" 2>&1 &
BERTH_PID=$!
deadline=$(( SECONDS + 60 ))
# tight, bounded polls (2 ms apart): the admin socket (a small request), then the last app
until curl -s -o /dev/null --max-time 2 --unix-socket "$SOCKET" http://berth/v1/specs; do
  kill -0 "$BERTH_PID" 2>/dev/null || { tail -20 "$BENCH_TMP/berth-server.log" >&2; BERTH_PID=""; die "berth exited during start-up"; }
  (( SECONDS < deadline )) || die "admin socket not answering 60 s after start"
  sleep 0.002
done
ADMIN_MS=$(ms_since "$t0")
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$LAST_URL" || true)" = 200 ]; do
  (( SECONDS < deadline )) || die "$LAST not answering 200 60 s after start"
  sleep 0.002
done
FIRST200_MS=$(ms_since "$t0")
sleep 3
RSS_IDLE_KB=$(awk '/^VmRSS/{print $2}' "/proc/$BERTH_PID/status")
HWM_KB=$(awk '/^VmHWM/{print $2}' "/proc/$BERTH_PID/status")
log "restart: admin socket after $ADMIN_MS ms, first 200 from $LAST after $FIRST200_MS ms, idle RSS $RSS_IDLE_KB kB"

# --- report ------------------------------------------------------------------------------------
echo
echo "== bench/routes.sh  $(date -u '+%F %T UTC')  $(nproc) cores, $APPS proxy apps on one domain, upstream: private nginx (13-byte file)"
echo "   load: wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS rounds per phase (direct nginx, [2nd berth,] berth); best = max req/s, med = median"
printf '%-30s | %9s %9s | %8s %8s | %8s | %s\n' "" "req/s" "req/s" "p50 ms" "p99 ms" "berth" ""
printf '%-30s | %9s %9s | %8s %8s | %8s | %s\n' "" best med med med "µs/req" errors
row() { printf '%-30s | %9s %9s | %8s %8s | %8s | %s\n' "$1" "$(agg max "$2" rps)" "$(agg median "$2" rps)" \
  "$(agg median "$2" p50_ms)" "$(agg median "$2" p99_ms)" "$(agg median "$2" cpu_us)" "$(errors_of "$2")"; }
row "direct nginx (phase 1)" direct-one
row "berth, 1 app: $FIRST" one
row "direct nginx (phase 2)" direct-many
row "2nd berth, 1 app: $FIRST" ref-many
row "berth, $APPS apps: $LAST" many
echo "phase 1: $NOTE_ONE"
echo "phase 2: $NOTE_MANY"
echo "creating $((APPS - 1)) apps ($PARALLEL parallel CLI calls): $CREATE_MS ms; berth RSS with $APPS apps after the load: ${BERTH_RSS_LOADED_KB} kB"
echo "restart with $APPS apps ($NOTE_START): admin socket answering after $ADMIN_MS ms, first proxied 200 ($LAST) after $FIRST200_MS ms"
echo "idle RSS 3 s after start-up: $RSS_IDLE_KB kB (peak $HWM_KB kB)"
[ "$BENCH_NICE" = 0 ] || echo "bench processes ran at nice $BENCH_NICE (BENCH_NICE=0 to disable)"
echo
awk -v one="$(agg max one rps)" -v many="$(agg max many rps)" \
    -v onem="$(agg median one rps)" -v manym="$(agg median many rps)" \
    -v d1="$(agg median direct-one rps)" -v d2="$(agg median direct-many rps)" 'BEGIN{
  r = many/one
  printf "medians: last/one %.2fx; berth/direct nginx %.2fx with 1 app, %.2fx with many\n", manym/onem, onem/d1, manym/d2
  printf "RATIO last-of-'"$APPS"' / one-app req/s = %.2f (target >= 0.95: %s)   [best rounds]\n", r, (r >= 0.95 ? "PASS" : "FAIL") }'
awk -v b="$(agg max many rps)" -v rb="$(agg max ref-many rps)" -v m="$(agg median many rps)" -v rm="$(agg median ref-many rps)" 'BEGIN{
  printf "INTERLEAVED last-of-'"$APPS"' / second berth with one app: best %.2f, median %.2f (target >= 0.95: %s on best)\n",
    b/rb, m/rm, (b/rb >= 0.95 ? "PASS" : "FAIL") }'
awk -v m="$(agg median many cpu_us)" -v o="$(agg median one cpu_us)" -v r="$(agg median ref-many cpu_us)" 'BEGIN{
  printf "CPU per request (medians, the figure least sensitive to background load): last-of-'"$APPS"' %.1f us, one app %.1f us (same server) / %.1f us (second berth): %.2fx / %.2fx\n",
    m, o, r, m/o, m/r }'
awk -v a="$ADMIN_MS" -v f="$FIRST200_MS" -v rss="$RSS_IDLE_KB" 'BEGIN{
  printf "START-UP with '"$APPS"' apps: admin %.0f ms, first 200 %.0f ms (target < 1000: %s); idle RSS %.1f MB (target < 60: %s)\n",
    a, f, (f < 1000 && a < 1000 ? "PASS" : "FAIL"), rss/1024, (rss/1024 < 60 ? "PASS" : "FAIL") }'
