#!/usr/bin/env bash
# bench/proxy-callgrind.sh — instructions per proxied request of berth, counted by
# valgrind's callgrind (user space only). Instruction counts barely move with the
# load of this shared machine, so they compare two builds where wall-clock figures
# cannot. Upstream: a private nginx on 127.0.0.1 (as in bench/proxy.sh); berth
# serves a proxy app /bench to it; after WARM requests the counters are zeroed,
# wrk sends load for DURATION, the counters are dumped and divided by wrk's request
# count.
# Env: BERTH_BIN (default target/release/berth) CONNS=8 DURATION=10s TOP=25 (functions listed)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
CONNS=${CONNS:-8}
DURATION=${DURATION:-10s}
bench_require_tools wrk nginx
apt_install valgrind valgrind
command -v callgrind_annotate >/dev/null || die "callgrind_annotate missing (Debian package valgrind)"

UP_PORT=$(free_port)
static_upstream_conf "$BENCH_TMP/nginx" "$UP_PORT" 'hello, berth'
start_private_nginx
wait_http "http://127.0.0.1:$UP_PORT/index.html" 10 || die "upstream nginx not answering"

# berth under callgrind: only `server start` runs under valgrind, the CLI runs natively.
REAL_BIN=$BERTH_BIN
[ -x "$REAL_BIN" ] || die "no berth binary at $REAL_BIN (cargo build --release --bin berth)"
CG_OUT="$BENCH_TMP/callgrind.out"
cat >"$BENCH_TMP/berth-cg" <<WRAP
#!/bin/sh
if [ "\$1" = server ]; then
  exec valgrind --tool=callgrind --callgrind-out-file=$CG_OUT "$REAL_BIN" "\$@"
fi
exec "$REAL_BIN" "\$@"
WRAP
chmod +x "$BENCH_TMP/berth-cg"
BERTH_BIN="$BENCH_TMP/berth-cg"
start_berth
create_app /bench --spec proxy --param "url=http://127.0.0.1:$UP_PORT"
URL="http://127.0.0.1:$BERTH_HTTP_PORT/bench/index.html"
wait_http "$URL" 60 || die "berth proxy app does not answer 200"
wrk -t1 -c"$CONNS" -d3s "$URL" >/dev/null 2>&1 || true       # warm-up: pool, allocator
callgrind_control --zero "$BERTH_PID" >/dev/null
out=$(wrk -t1 -c"$CONNS" -d"$DURATION" -s "$BENCH_DIR/wrk-report.lua" "$URL")
callgrind_control --dump "$BERTH_PID" >/dev/null
REQS=$(grep -o 'requests=[0-9]*' <<<"$out" | cut -d= -f2)
NON2XX=$(grep -o 'non2xx=[0-9]*' <<<"$out" | cut -d= -f2)
DUMP=$(ls -t "$CG_OUT".* 2>/dev/null | head -1)
[ -n "$DUMP" ] || die "no callgrind dump"
IR=$(awk '/^(summary|totals):/{print $2; exit}' "$DUMP")
echo "== bench/proxy-callgrind.sh  $(date -u '+%F %T UTC')  $REAL_BIN ($(date -r "$REAL_BIN" '+%F %T'))"
echo "   wrk -t1 -c$CONNS -d$DURATION through berth under callgrind: $REQS requests ($NON2XX non-2xx), $IR instructions"
awk -v ir="$IR" -v n="$REQS" 'BEGIN{printf "INSTRUCTIONS per request: %.0f\n", ir/n}'
callgrind_annotate "$DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -$(( ${TOP:-25} + 3 ))
