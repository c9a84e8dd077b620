#!/usr/bin/env bash
# `npm run bench:proxy-ab`: lb against one hand-written anchor at a time, with nothing else on the rig, and the
# CPU each spends per request or connection (utime + stime of all its processes from /proc, which includes the
# kernel's work in its system calls). Complements `npm run bench:proxy`, whose seven-target rounds are noisier
# for a two-row comparison.
#
#   http: lb (1 worker, :8080) and bench/anchors/node-undici-proxy.mjs (:18088) alive together, alternating
#         wrk -t1 -c64 runs of SECS seconds, ROUNDS rounds.
#   tcp:  lb (:8081) and bench/anchors/node-tcp-proxy.mjs (:8081), one process alive at a time, each started
#         afresh per run, wrk -t1 -c32 with `Connection: close` (a new connection per request).
#
# Proxies on CPU 0 (taskset -c 0), wrk and the anchors' nginx upstreams (127.0.0.1:19001/19002) on CPU 1, as in
# the rig. Writes bench/results/proxy/ab.txt. ROUNDS (default 4) and SECS (default 4) from the environment.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANCHORS=$ROOT/bench/anchors
ROUNDS=${ROUNDS:-4}
SECS=${SECS:-4}
OUT=$ROOT/bench/results/proxy
[ -f "$ANCHORS/node-undici-proxy.mjs" ] || { echo "bench/proxy-ab.sh: $ANCHORS not found" >&2; exit 1; }
[ -f "$ROOT/dist/src/cli.js" ] || { echo "bench/proxy-ab.sh: dist/ is missing; run \`npm run build\` first" >&2; exit 1; }
for tool in nginx wrk taskset; do command -v $tool >/dev/null || { echo "bench/proxy-ab.sh: $tool is needed" >&2; exit 1; }; done

TMP=$(mktemp -d /tmp/lb-ab.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The rig's own upstreams (run-anchors.sh writes its copy the same way; /big is not used here).
sed "s#@WORKDIR@#$TMP#g" "$ANCHORS/backend-nginx.conf" > "$TMP/up.conf"
sed "s#@ADMIN_SOCKET@#$TMP/admin.sock#" "$ROOT/bench/proxy-lb.toml" > "$TMP/lb.toml"

taskset -c 1 nginx -c "$TMP/up.conf" > /dev/null 2>&1 &
PIDS+=($!)
cd "$ROOT"

# CPU ticks (utime + stime) of a process and its children.
ticks() {
  local t=0 p
  for p in $1 $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo $t
}
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_free() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 0; sleep 0.1; done; return 1; }
HZ=$(getconf CLK_TCK)
# run NAME PID PORT WRK-ARGS...: one wrk run; prints req/s and µs of CPU per request.
run() {
  local name=$1 pid=$2 port=$3; shift 3
  local a b out n
  a=$(ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -d"${SECS}s" "$@" "http://127.0.0.1:$port/")
  b=$(ticks "$pid")
  n=$(echo "$out" | awk '/requests in/ {print $1}' | tr -d ,)
  echo "$name rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}') cpu_us_per_req=$(( (b - a) * 1000000 / HZ / n ))"
}

mkdir -p "$OUT"
: > "$OUT/ab.txt"
say() { echo "$*" | tee -a "$OUT/ab.txt"; }
{
  say "# bench/proxy-ab.sh, $(date -u +%FT%TZ), node $(node -v), load average at start: $(cut -d' ' -f1 /proc/loadavg)"
  say "## http: 64 kept-alive connections, both proxies alive, alternating"
  PORT=18088 taskset -c 0 node "$ANCHORS/node-undici-proxy.mjs" > /dev/null 2>&1 &
  A=$!; PIDS+=($A)
  taskset -c 0 node bin/lb.js run -c "$TMP/lb.toml" > "$TMP/lb.log" 2>&1 &
  L=$!; PIDS+=($L)
  wait_port 18088; wait_port 8080
  for p in 18088 8080; do taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$p/" > /dev/null; done
  for r in $(seq 1 "$ROUNDS"); do
    say "round=$r $(run node-undici $A 18088 -c64)"
    say "round=$r $(run lb $L 8080 -c64)"
  done
  kill $A $L; wait $A $L 2>/dev/null || true
  wait_free 8080; wait_free 8081
  say "## tcp: a new connection per request (32 at a time), one proxy alive at a time, started afresh"
  for r in $(seq 1 "$ROUNDS"); do
    for t in node-tcp-bare lb; do
      if [ $t = lb ]; then taskset -c 0 node bin/lb.js run -c "$TMP/lb.toml" > "$TMP/lb.log" 2>&1 &
      else PORT=8081 taskset -c 0 node "$ANCHORS/node-tcp-proxy.mjs" > /dev/null 2>&1 &
      fi
      P=$!; PIDS+=($P)
      wait_port 8081; sleep 0.5
      say "round=$r $(run $t $P 8081 -c32 -H 'Connection: close')"
      kill $P; wait $P 2>/dev/null || true
      wait_free 8081; wait_free 8080
    done
  done
}
