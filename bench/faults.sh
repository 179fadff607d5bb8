#!/usr/bin/env bash
# bench/faults.sh — fault injection against a running berth, one scenario at a time.
# Each scenario prints PASS/FAIL and the time from the moment the fault is over to the
# first good (200) answer through berth:
#
#   kill-container    docker kill of the app's running container; the next requests
#                     must get 200 again (berth sees the exit event and starts it again).
#   remove-container  docker rm -f of the app's container; berth must create a new one.
#   kill9-running     kill -9 of the berth server with the app running; a new server on the
#                     same home adopts the container (no second container, no restart).
#   kill9-building    kill -9 of the berth server while it builds an app from source; a new
#                     server builds again on the next request and serves it; no build
#                     container is left running.
#   engine-restart    the Docker daemon is stopped and started again (its containers stop);
#                     target: first 200 within 2 s of `docker info` answering again. Needs
#                     dockerd started by shared/tools/install-container-engine.sh (setsid),
#                     not by systemd; skipped otherwise.
#
# Env: SCENARIOS="kill-container remove-container kill9-running kill9-building engine-restart"
#      KEEP_TMP=1  BERTH_REBUILD=1
# Traffic goes to 127.0.0.1 only; every wait is bounded.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

SCENARIOS=${SCENARIOS:-"kill-container remove-container kill9-running kill9-building engine-restart"}
ENGINE_TARGET_MS=2000
RESULTS=()
FAILED=0

bench_require_tools
bench_build_image
bench_ensure_berth
start_berth "failure_backoff_secs = 1"

create_app /faults --spec image --approve --param "image=$BENCH_IMAGE" --param port=80
IMAGE_APP_ID=$APP_ID
URL="http://127.0.0.1:$BERTH_HTTP_PORT/faults/"

code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$1" || true; }

# until_200 URL LIMIT_S : curl with no sleep until 200; prints ms taken; fails after LIMIT_S
until_200() {
  local url=$1 limit=$2 t0 c="" deadline
  t0=$(now_ms); deadline=$(( SECONDS + limit ))
  while (( SECONDS < deadline )); do
    c=$(code "$url")
    if [ "$c" = 200 ]; then ms_since "$t0"; return 0; fi
    sleep 0.01
  done
  log "no 200 from $url within ${limit}s (last code '$c')"
  return 1
}

result() { # result NAME PASS|FAIL DETAIL
  RESULTS+=("$(printf '%-18s %s  %s' "$1" "$2" "$3")")
  [ "$2" = PASS ] || FAILED=1
  log "$1: $2 $3"
}

running_container() { docker ps -q --no-trunc --filter "label=berth.app.id=$1" | head -1; }
container_count() { docker ps -aq --filter "label=berth.app.id=$1" | wc -l; }

# restart_berth : kill -9 the server, start a new one on the same home and ports
restart_berth_kill9() {
  kill -KILL "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true
  rm -f "$BERTH_HOME_DIR/run/berth.sock"
  BERTH_HOME="$BERTH_HOME_DIR" "$BERTH_BIN" server start >>"$BENCH_TMP/berth-server.log" 2>&1 &
  BERTH_PID=$!
  local deadline=$(( SECONDS + 30 ))
  until berth app list >/dev/null 2>&1; do
    (( SECONDS < deadline )) || die "berth did not come back within 30 s after kill -9"
    sleep 0.05
  done
}

until_200 "$URL" 60 >/dev/null || die "the image app never answered 200"

for s in $SCENARIOS; do
  case "$s" in
  kill-container)
    cid=$(running_container "$IMAGE_APP_ID"); [ -n "$cid" ] || die "no running container for /faults"
    docker kill "$cid" >/dev/null
    if ms=$(until_200 "$URL" 30); then result "$s" PASS "first 200 after ${ms} ms"
    else result "$s" FAIL "no 200 within 30 s"; fi ;;
  remove-container)
    until_200 "$URL" 30 >/dev/null || true
    cid=$(running_container "$IMAGE_APP_ID"); [ -n "$cid" ] || die "no running container for /faults"
    docker rm -f "$cid" >/dev/null
    if ms=$(until_200 "$URL" 30); then
      n=$(container_count "$IMAGE_APP_ID")
      if [ "$n" = 1 ]; then result "$s" PASS "first 200 after ${ms} ms, 1 container"
      else result "$s" FAIL "200 after ${ms} ms but $n containers"; fi
    else result "$s" FAIL "no 200 within 30 s"; fi ;;
  kill9-running)
    until_200 "$URL" 30 >/dev/null || true
    before=$(running_container "$IMAGE_APP_ID")
    restart_berth_kill9
    if ms=$(until_200 "$URL" 30); then
      after=$(running_container "$IMAGE_APP_ID"); n=$(container_count "$IMAGE_APP_ID")
      if [ "$before" = "$after" ] && [ "$n" = 1 ]; then result "$s" PASS "first 200 ${ms} ms after the new server answered; same container adopted"
      else result "$s" FAIL "200 after ${ms} ms but container ${before:0:12} -> ${after:0:12}, $n containers"; fi
    else result "$s" FAIL "no 200 within 30 s"; fi ;;
  kill9-building)
    src="$BENCH_TMP/slow-build"; mkdir -p "$src"
    cp "$ROOT_DIR/tests/fixtures/apps/container/server.py" "$src/"
    # A unique, slow step so the build is surely running when the server is killed.
    cat >"$src/Containerfile" <<CF
FROM python:3.12.5-slim
WORKDIR /app
RUN echo "faults $$ $RANDOM" >/app/stamp && sleep 8
COPY server.py /app/server.py
EXPOSE 8080
CMD ["python", "-u", "/app/server.py"]
CF
    berth app create --spec container --approve "$src" /slowbuild >"$BENCH_TMP/create-slowbuild.log" 2>&1 \
      || { cat "$BENCH_TMP/create-slowbuild.log" >&2; die "create /slowbuild failed"; }
    BUILD_APP_ID=$(app_field /slowbuild id); BERTH_APP_IDS+=("$BUILD_APP_ID")
    BURL="http://127.0.0.1:$BERTH_HTTP_PORT/slowbuild/"
    curl -s -o /dev/null --max-time 2 "$BURL" || true          # starts the build
    deadline=$(( SECONDS + 20 ))
    until [ "$(app_field /slowbuild state)" = building ]; do
      (( SECONDS < deadline )) || die "/slowbuild never reported building"
      sleep 0.1
    done
    sleep 2
    restart_berth_kill9
    if ms=$(until_200 "$BURL" 120); then
      sleep 1
      # Intermediate build containers of the killed build: running ones with our stamp step.
      leftovers=$(docker ps -q --filter "status=running" | xargs -r docker inspect -f '{{.Config.Cmd}}' 2>/dev/null | grep -c "faults $$" || true)
      if [ "$leftovers" = 0 ]; then result "$s" PASS "rebuilt and served ${ms} ms after the new server answered; no build container left"
      else result "$s" FAIL "served after ${ms} ms but $leftovers build containers still run"; fi
    else result "$s" FAIL "no 200 within 120 s after the restart"; fi ;;
  engine-restart)
    pid=$(pgrep -xo dockerd || true)
    if [ -z "$pid" ] || [ "$(ps -o comm= -p "$(ps -o ppid= -p "$pid" | tr -d ' ')")" = systemd ]; then
      result "$s" SKIP "dockerd not started by install-container-engine.sh"; continue
    fi
    until_200 "$URL" 30 >/dev/null || true
    mapfile -d '' -t args < <(tr '\0' '\n' </proc/"$pid"/cmdline | tail -n +2 | tr '\n' '\0')
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    deadline=$(( SECONDS + 60 ))
    while kill -0 "$pid" 2>/dev/null; do (( SECONDS < deadline )) || die "dockerd did not stop"; sleep 0.1; done
    # While the engine is down berth must say so, not report an app failure.
    down_code=$(code "$URL"); down_body=$(curl -s --max-time 5 "$URL" || true)
    setsid /usr/sbin/dockerd "${args[@]}" >>/var/log/dockerd.log 2>&1 </dev/null &
    deadline=$(( SECONDS + 60 ))
    until docker info >/dev/null 2>&1; do (( SECONDS < deadline )) || die "dockerd did not come back"; sleep 0.02; done
    if ms=$(until_200 "$URL" 30); then
      verdict=PASS; awk -v m="$ms" -v t="$ENGINE_TARGET_MS" 'BEGIN{exit !(m < t)}' || verdict=FAIL
      result "$s" "$verdict" "first 200 ${ms} ms after docker info answered (target < ${ENGINE_TARGET_MS} ms); while down: $down_code $(head -c 80 <<<"$down_body")"
    else result "$s" FAIL "no 200 within 30 s of the engine answering"; fi ;;
  *) die "unknown scenario $s" ;;
  esac
done

kill -0 "$BERTH_PID" 2>/dev/null || die "berth died (see $BENCH_TMP/berth-server.log)"
echo
echo "== bench/faults.sh  $(date -u '+%F %T UTC')  $(nproc) cores, Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
printf '%s\n' "${RESULTS[@]}"
echo "RESULT $([ "$FAILED" = 0 ] && echo PASS || echo FAIL)"
exit "$FAILED"
