# shellcheck shell=bash
# Shared helpers for the berth benchmark scripts (sourced, not executed).
#
# Rules every script follows:
#   - traffic goes to 127.0.0.1 only; containers publish on 127.0.0.1 only;
#   - every load loop / wait loop is bounded in time;
#   - everything started here is cleaned up by the EXIT trap (bench_cleanup):
#     berth (TERM, then KILL), the private nginx, and only the containers this
#     run created.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$BENCH_DIR/.." && pwd)"
BENCH_IMAGE="${BENCH_IMAGE:-berth-bench-static:latest}"
BENCH_TMP="$(mktemp -d /tmp/berth-bench.XXXXXX)"

BERTH_BIN="${BERTH_BIN:-$ROOT_DIR/target/release/berth}"
BERTH_PID=""
BERTH_HOME_DIR=""
BERTH_HTTP_PORT=""
BERTH_HTTPS_PORT=""
NGINX_PID=""
CREATED_CONTAINERS=()      # containers created by this script (docker run/create)
PRE_EXISTING_CONTAINERS="" # all container ids before berth started
BERTH_APP_IDS=()           # app ids created in our private BERTH_HOME

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { log "ERROR: $*"; exit 1; }

now_ms() { # wall clock in ms with µs precision, no fork
  local t=${EPOCHREALTIME/[.,]/}
  printf '%d.%03d' "$((t / 1000))" "$((t % 1000))"
}
ms_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN{printf "%.1f", b-a}'; }

apt_install() { # apt_install CMD PKG
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (missing $1)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >"$BENCH_TMP/apt.log" 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$BENCH_TMP/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >>"$BENCH_TMP/apt.log" 2>&1 \
      || die "apt-get install $2 failed, see $BENCH_TMP/apt.log"
  fi
}

bench_require_tools() {
  apt_install curl curl
  apt_install jq jq
  command -v docker >/dev/null || die "docker CLI missing (see shared/tools/install-container-engine.sh)"
  docker info >/dev/null 2>&1 || die "docker daemon not answering"
  for t in "$@"; do
    case "$t" in
      wrk)   apt_install wrk wrk ;;
      nginx) apt_install nginx nginx
             # Debian's postinst may start a system nginx; we never want one running.
             if [ -f /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
               log "note: a system nginx is running (pid $(cat /run/nginx.pid)); not touching it"
             fi ;;
    esac
  done
}

free_port() { # an unused 127.0.0.1 TCP port
  local p
  for _ in $(seq 1 50); do
    p=$(( (RANDOM % 20000) + 20000 ))
    if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# Build (once, cached by docker) a tiny nginx image that serves a 13-byte file
# with access logging off, so the upstream is as cheap as possible.
bench_build_image() {
  local ctx="$BENCH_TMP/image"
  mkdir -p "$ctx"
  printf 'hello, berth\n' >"$ctx/index.html"          # 13 bytes
  cat >"$ctx/default.conf" <<'CONF'
server {
    listen 80;
    access_log off;
    location / {
        root /usr/share/nginx/html;
        index index.html;
    }
}
CONF
  cat >"$ctx/Dockerfile" <<'DF'
FROM nginx:latest
COPY default.conf /etc/nginx/conf.d/default.conf
COPY index.html /usr/share/nginx/html/index.html
LABEL berth.bench=true
DF
  DOCKER_BUILDKIT=0 docker build --network host -q -t "$BENCH_IMAGE" "$ctx" >"$BENCH_TMP/image-build.log" 2>&1 \
    || { cat "$BENCH_TMP/image-build.log" >&2; die "image build failed"; }
}

# wait_http URL [timeout_s] : until the URL answers 200
wait_http() {
  local url=$1 deadline=$(( SECONDS + ${2:-20} ))
  while (( SECONDS < deadline )); do
    [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" = 200 ] && return 0
    sleep 0.05
  done
  return 1
}

# cpu_busy_pct : % of all CPUs busy over the next second (before we start load);
# anything high means another workload (e.g. a cargo build) will skew numbers.
cpu_busy_pct() {
  local a b
  read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat; a=$((a1+a2+a3+a4+a5+a6+a7+a8)); local ai=$((a4+a5))
  sleep 1
  read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat; b=$((b1+b2+b3+b4+b5+b6+b7+b8)); local bi=$((b4+b5))
  awk -v t=$((b - a)) -v i=$((bi - ai)) 'BEGIN{printf "%.0f", t ? (t-i)*100/t : 0}'
}
# quiet_note : one line describing background CPU use, for the report
quiet_note() {
  local busy; busy=$(cpu_busy_pct)
  if [ "$busy" -gt 15 ]; then
    echo "WARNING: machine was ${busy}% busy before the run (top: $(ps -eo comm,pcpu --sort=-pcpu --no-headers | head -3 | awk '{printf "%s %s%%, ", $1, $2}'))numbers are skewed"
  else
    echo "machine idle before the run (${busy}% busy)"
  fi
}

# Priority boost. The machine is shared with development work (cargo builds,
# test suites), which makes 2-core numbers swing by 2x. With BENCH_NICE (default
# -10, set BENCH_NICE=0 to disable) everything that belongs to the benchmark
# runs at a higher CPU priority: this shell and its children (wrk, curl, the
# private nginx, berth), and, via boost_container, a container's processes and
# the docker-proxy of its published port. The Docker daemons are left alone.
BENCH_NICE=${BENCH_NICE:--10}
bench_boost_self() {
  [ "$BENCH_NICE" != 0 ] || return 0
  renice -n "$BENCH_NICE" -p $$ >/dev/null 2>&1 || log "note: renice failed; running at normal priority"
}
boost_container() { # boost_container CID [HOST_PORT]
  [ "$BENCH_NICE" != 0 ] || return 0
  local cid; cid=$(docker inspect -f '{{.Id}}' "$1") || return 0
  local f pids=""
  for f in /sys/fs/cgroup/cpu/docker/"$cid"/cgroup.procs /sys/fs/cgroup/pids/docker/"$cid"/cgroup.procs \
           /sys/fs/cgroup/system.slice/docker-"$cid".scope/cgroup.procs; do
    [ -r "$f" ] && { pids=$(cat "$f"); break; }
  done
  [ -z "${2:-}" ] || pids+=" $(pgrep -f "docker-proxy .*-host-ip 127.0.0.1 -host-port $2 " || true)"
  # shellcheck disable=SC2086
  [ -z "${pids// /}" ] || renice -n "$BENCH_NICE" -p $pids >/dev/null 2>&1 || true
}

bench_ensure_berth() {
  if [ ! -x "$BERTH_BIN" ] || [ "${BERTH_REBUILD:-0}" = 1 ]; then
    log "building berth (cargo build --release --bin berth)"
    (cd "$ROOT_DIR" && timeout 1800 cargo build --release --bin berth) >"$BENCH_TMP/cargo.log" 2>&1 \
      || { tail -20 "$BENCH_TMP/cargo.log" >&2; die "berth does not build"; }
  fi
  [ -x "$BERTH_BIN" ] || die "no berth binary at $BERTH_BIN"
  log "berth binary: $BERTH_BIN ($(date -r "$BERTH_BIN" '+%F %T'))"
}

berth() { BERTH_HOME="$BERTH_HOME_DIR" "$BERTH_BIN" "$@"; }

# start_berth [extra toml] : private BERTH_HOME, free ports, background server
start_berth() {
  BERTH_HOME_DIR="$BENCH_TMP/berth-home"
  mkdir -p "$BERTH_HOME_DIR"
  BERTH_HTTP_PORT=$(free_port)
  BERTH_HTTPS_PORT=$(free_port)
  while [ "$BERTH_HTTPS_PORT" = "$BERTH_HTTP_PORT" ]; do BERTH_HTTPS_PORT=$(free_port); done
  cat >"$BERTH_HOME_DIR/berth.toml" <<TOML
[http]
host = "127.0.0.1"
port = $BERTH_HTTP_PORT
[https]
host = "127.0.0.1"
port = $BERTH_HTTPS_PORT
[container]
idle_shutdown_secs = 180
${1:-}
TOML
  PRE_EXISTING_CONTAINERS=$(docker ps -aq --no-trunc)
  BERTH_HOME="$BERTH_HOME_DIR" "$BERTH_BIN" server start >"$BENCH_TMP/berth-server.log" 2>&1 &
  BERTH_PID=$!
  local deadline=$(( SECONDS + 30 ))
  until berth app list >/dev/null 2>&1; do
    if ! kill -0 "$BERTH_PID" 2>/dev/null; then
      tail -30 "$BENCH_TMP/berth-server.log" >&2; BERTH_PID=""; die "berth server exited during startup"
    fi
    (( SECONDS < deadline )) || { tail -30 "$BENCH_TMP/berth-server.log" >&2; die "berth not ready after 30 s"; }
    sleep 0.1
  done
  log "berth ready: pid $BERTH_PID http 127.0.0.1:$BERTH_HTTP_PORT https 127.0.0.1:$BERTH_HTTPS_PORT home $BERTH_HOME_DIR"
}

# app_field PATH FIELD : a field of the app mounted at PATH from `app list --format json`
app_field() {
  berth app list --format json 2>/dev/null \
    | jq -r --arg p "$1" --arg f "$2" '.[] | select(.app_path == $p or .app_path == ($p + "/")) | .[$f] // empty' \
    | head -1
}

# create_app PATH ARGS... : berth app create ... - PATH ; sets APP_ID, records it
# (call it directly, not in $(...), so the id is recorded for cleanup)
APP_ID=""
create_app() { local path=$1; shift; create_app_from - "$path" "$@"; }

# containers of a berth app (label berth.app.id=ID), created after berth started
app_containers() {
  local c
  for c in $(docker ps -aq --no-trunc --filter "label=berth.app.id=$1"); do
    grep -qx "$c" <<<"$PRE_EXISTING_CONTAINERS" || echo "$c"
  done
}

start_private_nginx() { # start_private_nginx CONF_BODY_FILE ; config written by caller at $BENCH_TMP/nginx/nginx.conf
  local d="$BENCH_TMP/nginx"
  mkdir -p "$d/tmp" "$d/logs"
  nginx -t -p "$d" -c "$d/nginx.conf" -e "$d/logs/error.log" >"$d/logs/test.log" 2>&1 \
    || { cat "$d/logs/test.log" >&2; die "nginx config invalid"; }
  nginx -p "$d" -c "$d/nginx.conf" -e "$d/logs/error.log" -g 'daemon off;' >"$d/logs/stdout.log" 2>&1 &
  NGINX_PID=$!
}

bench_cleanup() {
  local rc=$?
  set +e
  if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill -QUIT "$NGINX_PID"; for _ in $(seq 1 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NGINX_PID" 2>/dev/null
  fi
  local berth_containers=()
  if [ -n "$BERTH_HOME_DIR" ]; then
    for id in "${BERTH_APP_IDS[@]}"; do mapfile -t -O "${#berth_containers[@]}" berth_containers < <(app_containers "$id"); done
  fi
  if [ -n "$BERTH_PID" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
    kill -TERM "$BERTH_PID"
    for _ in $(seq 1 100); do kill -0 "$BERTH_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$BERTH_PID" 2>/dev/null; then log "berth did not exit 10 s after SIGTERM; killing"; kill -KILL "$BERTH_PID"; fi
    wait "$BERTH_PID" 2>/dev/null
  fi
  local all=("${CREATED_CONTAINERS[@]}" "${berth_containers[@]}")
  if [ "${#all[@]}" -gt 0 ]; then docker rm -f "${all[@]}" >/dev/null 2>&1; fi
  if [ "${KEEP_TMP:-0}" = 1 ] || [ "$rc" != 0 ]; then
    log "logs kept in $BENCH_TMP"
  else
    rm -rf "$BENCH_TMP"
  fi
  exit "$rc"
}

# cpu_ticks PID... : total utime+stime (clock ticks, getconf CLK_TCK) of the listed processes
cpu_ticks() {
  local sum=0 p f
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    f=$(sed 's/^.*) //' "/proc/$p/stat")      # fields from 3 on
    # shellcheck disable=SC2086
    set -- $f; sum=$(( sum + ${12} + ${13} )) # utime=14, stime=15
  done
  echo "$sum"
}

# static_upstream_conf DIR PORT BODY : writes DIR/nginx.conf for an nginx (1 worker, running as
# this user so it can read the private temp folder) that serves BODY as DIR/html/index.html on
# 127.0.0.1:PORT, access log off, long keep-alive: the cheapest upstream the proxy benches use.
static_upstream_conf() {
  local d=$1 port=$2
  mkdir -p "$d/tmp" "$d/logs" "$d/html"
  printf '%s\n' "$3" >"$d/html/index.html"
  cat >"$d/nginx.conf" <<CONF
user $(id -un) $(id -gn);
worker_processes 1;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { root $d/html; index index.html; }
    }
}
CONF
}

# create_app_from SOURCE PATH ARGS... : like create_app, with a source (a folder or
# git URL) instead of `-`; sets APP_ID, records it for cleanup
create_app_from() {
  local src=$1 path=$2; shift 2
  berth app create "$@" "$src" "$path" >"$BENCH_TMP/create${path//\//_}.log" 2>&1 \
    || { cat "$BENCH_TMP/create${path//\//_}.log" >&2; die "berth app create $path ($src) failed"; }
  local id; id=$(app_field "$path" id)
  [ -n "$id" ] || { berth app list --format json >&2 || true; die "app $path not in 'app list --format json'"; }
  BERTH_APP_IDS+=("$id")
  APP_ID=$id
}
