#!/usr/bin/env bash
# bench/build.sh: berth's image build of a fixture vs `docker build` of the same context, in
# the same run, plus the time to read, hash and tar a 10,000-file source.
#
# Each round changes one source file, so both sides rebuild the layers after the COPY of the
# source and reuse the cached dependency layers (the common case: a code change). berth's
# side is `berth app reload` (fetch a snapshot, hash, tar, build through the Engine API);
# the baseline is `docker build` of the same assembled context (spec files + source).
# Prints the medians and berth's overhead in percent. Target: under 10 %.
# Talks only to 127.0.0.1. Knobs: ROUNDS (default 5), SPEC (default python-flask).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SPEC=${SPEC:-python-flask}
BERTH=target/release/berth
[ -x "$BERTH" ] || cargo build --release --bin berth
cargo build --release --example context_bench -q

work=$(mktemp -d)
export BERTH_HOME=$work/home
mkdir -p "$BERTH_HOME"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[http]\nhost = "127.0.0.1"\nport = %s\n[https]\nport = -1\n' "$port" > "$BERTH_HOME/berth.toml"
cleanup() {
  "$BERTH" server stop >/dev/null 2>&1 || true
  if [ -f "$BERTH_HOME/instance_id" ]; then
    ids=$(docker ps -aq --filter "label=berth.instance=$(cat "$BERTH_HOME/instance_id")")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  fi
  docker rmi -f berth-bench-docker-build >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"$BERTH" server start >"$work/server.log" 2>&1 &
for _ in $(seq 150); do "$BERTH" app list >/dev/null 2>&1 && break; sleep 0.1; done

src=$work/src
cp -r "tests/fixtures/apps/$SPEC" "$src"
"$BERTH" app create --spec "$SPEC" "$src" /bench >/dev/null
# Warm both caches once (the dependency layers), untimed.
"$BERTH" app reload /bench >/dev/null
ctx=$work/ctx
assemble() {
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -r "specs/$SPEC/." "$ctx/"; rm -f "$ctx/spec.toml" "$ctx/README.md"
  cp -r "$src/." "$ctx/"
}
assemble
cf=Containerfile; [ -f "$ctx/$cf" ] || cf=Dockerfile
DOCKER_BUILDKIT=0 docker build -q -t berth-bench-docker-build -f "$ctx/$cf" "$ctx" >/dev/null

now_ms() { date +%s%3N; }
berth_ms=(); docker_ms=()
for i in $(seq "$ROUNDS"); do
  echo "# round $i $(date +%s%N)" >> "$src/app.py"
  assemble
  t0=$(now_ms); DOCKER_BUILDKIT=0 docker build -q -t berth-bench-docker-build -f "$ctx/$cf" "$ctx" >/dev/null 2>&1; t1=$(now_ms)
  docker_ms+=($((t1 - t0)))
  echo "# round $i berth $(date +%s%N)" >> "$src/app.py"
  t0=$(now_ms); "$BERTH" app reload /bench >/dev/null; t1=$(now_ms)
  berth_ms+=($((t1 - t0)))
  echo "round $i: docker build ${docker_ms[-1]} ms, berth reload ${berth_ms[-1]} ms"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
md=$(median "${docker_ms[@]}"); mb=$(median "${berth_ms[@]}")
echo "docker build median: ${md} ms"
echo "berth reload median: ${mb} ms"
echo "context (10,000 files): $(target/release/examples/context_bench 10000)"
awk -v b="$mb" -v d="$md" 'BEGIN { printf "RATIO berth/docker build = %.3f (overhead %+.1f %%; target < 10 %%)\n", b/d, (b/d-1)*100 }'
