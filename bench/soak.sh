#!/usr/bin/env bash
# bench/soak.sh — sustained load through berth: wrk at 256 connections for 60 s against an
# image app (nginx serving a 13-byte file), sampling the server's open file descriptors and
# RSS every 5 s. Baseline in the same run: the same wrk load straight at the container.
#
# PASS when: no socket errors and no non-2xx answers through berth; RSS at the end of the
# load is at most 1.25x the RSS after the first 10 s; the fd count 20 s after the load
# (upstream pool idle timeout 15 s) is within 16 of the count before it.
#
# Env: DURATION=60  CONNECTIONS=256  KEEP_TMP=1  BERTH_REBUILD=1
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

DURATION=${DURATION:-60}
CONNECTIONS=${CONNECTIONS:-256}

bench_require_tools wrk
bench_boost_self
bench_build_image
bench_ensure_berth
start_berth

create_app /soak --spec image --approve --param "image=$BENCH_IMAGE" --param port=80
URL="http://127.0.0.1:$BERTH_HTTP_PORT/soak/"
wait_http "$URL" 60 || die "/soak never answered 200"
CID=$(docker ps -q --no-trunc --filter "label=berth.app.id=$APP_ID" | head -1)
DIRECT_PORT=$(docker inspect -f '{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}' "$CID")

fds() { ls /proc/"$BERTH_PID"/fd | wc -l; }
rss_kb() { awk '/^VmRSS/{print $2}' /proc/"$BERTH_PID"/status; }

QUIET_NOTE=$(quiet_note); log "$QUIET_NOTE"
log "baseline: wrk straight at the container (127.0.0.1:$DIRECT_PORT), 10 s"
wrk -t2 -c"$CONNECTIONS" -d10s "http://127.0.0.1:$DIRECT_PORT/" >"$BENCH_TMP/wrk-direct.txt" 2>&1 || true

sleep 16  # let pooled upstream connections from the warm-up close
FD_BEFORE=$(fds); RSS_BEFORE=$(rss_kb)
log "berth before: $FD_BEFORE fds, $RSS_BEFORE kB RSS; wrk -c$CONNECTIONS -d${DURATION}s through berth"
SAMPLES=()
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL" >"$BENCH_TMP/wrk-berth.txt" 2>&1 &
WRK=$!
t=0
while kill -0 "$WRK" 2>/dev/null && (( t <= DURATION + 10 )); do
  sleep 5; t=$((t + 5))
  kill -0 "$BERTH_PID" 2>/dev/null || die "berth died under load (see $BENCH_TMP/berth-server.log)"
  SAMPLES+=("$(printf '%3ds %5d fds %7d kB' "$t" "$(fds)" "$(rss_kb)")")
  [ "$t" = 10 ] && RSS_WARM=$(rss_kb)
done
wait "$WRK" || true
RSS_END=$(rss_kb)
sleep 20
FD_AFTER=$(fds); RSS_AFTER=$(rss_kb)

errors=$(grep -E 'Socket errors|Non-2xx' "$BENCH_TMP/wrk-berth.txt" || true)
reqs=$(awk '/Requests\/sec/{print $2}' "$BENCH_TMP/wrk-berth.txt")
direct=$(awk '/Requests\/sec/{print $2}' "$BENCH_TMP/wrk-direct.txt")
p99=$(awk '/ 99%/{print $2}' "$BENCH_TMP/wrk-berth.txt")
total=$(awk '/requests in/{print $1}' "$BENCH_TMP/wrk-berth.txt")

echo
echo "== bench/soak.sh  $(date -u '+%F %T UTC')  $(nproc) cores, ${DURATION}s at $CONNECTIONS connections"
printf '%s\n' "${SAMPLES[@]}"
echo "through berth: $total requests, $reqs req/s, p99 $p99; straight to the container (10 s): $direct req/s"
echo "errors: ${errors:-none}"
echo "fds: before $FD_BEFORE, 20 s after $FD_AFTER; RSS kB: before $RSS_BEFORE, at 10 s ${RSS_WARM:-?}, at end $RSS_END, 20 s after $RSS_AFTER"
echo "$QUIET_NOTE"
ok=1
[ -z "$errors" ] || { echo "FAIL: wrk reported errors"; ok=0; }
awk -v e="$RSS_END" -v w="${RSS_WARM:-$RSS_END}" 'BEGIN{exit !(e <= w * 1.25)}' || { echo "FAIL: RSS grew from ${RSS_WARM:-?} to $RSS_END kB"; ok=0; }
(( FD_AFTER <= FD_BEFORE + 16 )) || { echo "FAIL: fds grew from $FD_BEFORE to $FD_AFTER"; ok=0; }
awk -v b="$reqs" -v d="$direct" 'BEGIN{printf "RATIO berth/direct req/s = %.2f\n", (d > 0 ? b / d : 0)}'
echo "RESULT $([ "$ok" = 1 ] && echo PASS || echo FAIL)"
[ "$ok" = 1 ]
