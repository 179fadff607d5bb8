#!/usr/bin/env bash
# bench/creates.sh — what one create and one delete cost when many apps exist, and idle RSS
# after a start with that many apps, without creating them all through the CLI (routes.sh does
# that and takes minutes).
#
#   1. berth creates one proxy app through the CLI; the server stops; the script copies that
#      app's rows into N-1 more apps (/app-00002 ...) with sqlite3, in berth's own schema
#      (migrations/0001_apps.sql). The upstream URL is a closed 127.0.0.1 port: nothing is
#      proxied here.
#   2. berth starts with the N apps: time to the admin socket answering, RSS 3 s later.
#   3. M more proxy apps are created through the CLI (P calls in parallel), then deleted.
#
# Env: APPS=10000 EXTRA=200 PARALLEL=4 BERTH_BIN=... KEEP_TMP=1 BENCH_NICE=-10
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

APPS=${APPS:-10000}
EXTRA=${EXTRA:-200}
PARALLEL=${PARALLEL:-4}
(( APPS >= 1 && APPS <= 99999 && EXTRA >= 1 )) || die "APPS must be 1..99999, EXTRA >= 1"
apt_install sqlite3 sqlite3
bench_boost_self
bench_ensure_berth

stop_berth() {
  kill -TERM "$BERTH_PID"
  for _ in $(seq 1 100); do kill -0 "$BERTH_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$BERTH_PID" 2>/dev/null && die "berth did not stop within 10 s of SIGTERM"
  wait "$BERTH_PID" 2>/dev/null || true
  BERTH_PID=""
}

UP_URL="http://127.0.0.1:$(free_port)"
start_berth
berth app create --spec proxy --param "url=$UP_URL" - /app-00001 >/dev/null || die "first create failed"
stop_berth
DB="$BERTH_HOME_DIR/metadata/berth.db"
sqlite3 "$DB" "
  WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < $APPS)
  INSERT INTO apps (id, domain, path, source_url, spec, created_at, prod_version, stage_version)
    SELECT printf('app_seed_%05d', i), a.domain, printf('/app-%05d', i), a.source_url, a.spec, a.created_at + i, 1, 1
    FROM n, apps a;
  INSERT INTO app_versions (app_id, version, config, reason, created_at)
    SELECT s.id, 1, v.config, v.reason, s.created_at FROM apps s, app_versions v WHERE s.id LIKE 'app_seed_%';"
[ "$(sqlite3 "$DB" 'SELECT count(*) FROM apps')" = "$APPS" ] || die "seeding failed"

NOTE=$(quiet_note); log "start: $NOTE"
t0=$(now_ms)
start_berth
START_MS=$(ms_since "$t0")
sleep 3
RSS_KB=$(awk '/^VmRSS/{print $2}' "/proc/$BERTH_PID/status")
ANON_KB=$(awk '/^RssAnon/{print $2}' "/proc/$BERTH_PID/status")
log "berth with $APPS apps ready after $START_MS ms (polls 100 ms apart); idle RSS $RSS_KB kB"

export BERTH_HOME="$BERTH_HOME_DIR"
run_many() { # run_many VERB : EXTRA CLI calls, PARALLEL at a time; prints ms
  local t0; t0=$(now_ms)
  seq 1 "$EXTRA" | timeout 600 xargs -P "$PARALLEL" -I{} sh -c \
    'p=$(printf "/extra-%05d" {}); if [ "$1" = create ]; then "$0" app create --spec proxy --param "url=$2" - "$p"; else "$0" app delete "$p"; fi >/dev/null 2>>"$3" || echo "$1 $p failed" >>"$3"' \
    "$BERTH_BIN" "$1" "$UP_URL" "$BENCH_TMP/errors.log" || die "$1 calls failed or timed out"
  ! grep -q . "$BENCH_TMP/errors.log" 2>/dev/null || { head -5 "$BENCH_TMP/errors.log" >&2; die "some $1 calls failed"; }
  ms_since "$t0"
}
NOTE_OPS=$(quiet_note); log "creates/deletes: $NOTE_OPS"
CREATE_MS=$(run_many create)
N=$(berth app list --format json | jq length)
[ "$N" = "$((APPS + EXTRA))" ] || die "app list shows $N apps, expected $((APPS + EXTRA))"
DELETE_MS=$(run_many delete)

echo
echo "== bench/creates.sh  $(date -u '+%F %T UTC')  $(nproc) cores, $APPS proxy apps, binary $BERTH_BIN"
echo "start with $APPS apps ($NOTE): ready after $START_MS ms; idle RSS 3 s later $RSS_KB kB (anonymous $ANON_KB kB)"
echo "$EXTRA creates, $PARALLEL parallel CLI calls ($NOTE_OPS): $CREATE_MS ms"
echo "$EXTRA deletes, $PARALLEL parallel CLI calls: $DELETE_MS ms"
awk -v c="$CREATE_MS" -v d="$DELETE_MS" -v n="$EXTRA" -v rss="$RSS_KB" 'BEGIN{
  printf "RATIO per create %.1f ms, per delete %.1f ms (wall clock, %d parallel); idle RSS %.1f MB (target < 60: %s)\n",
    c / n, d / n, '"$PARALLEL"', rss / 1024, (rss / 1024 < 60 ? "PASS" : "FAIL") }'
