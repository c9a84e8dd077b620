#!/usr/bin/env bash
# Side-by-side baseline for lb: the same upstreams, the same load generator, one run, interleaved rounds.
# The proxy under test is pinned to CPU 0; wrk and the nginx upstreams share CPU 1.
#
#   run-anchors.sh http [ROUNDS] [SECONDS]   L7: 64 kept-alive connections, tiny responses
#   run-anchors.sh l4   [ROUNDS] [SECONDS]   L4: bulk 1 MiB responses, and new connection per request
#
# Add your own target with EXTRA="name port[;name2 port2]"; start it yourself, pinned with taskset -c 0,
# pointing at the upstreams 127.0.0.1:19001 and 127.0.0.1:19002 (GET / and GET /big).
# Read the ratios between rows of the same round; absolute numbers vary from run to run.
#
# Needs haproxy, nginx (with the stream module) and wrk; installs them from Debian when missing (as root).
# The Node proxies resolve undici and http-proxy-3 from this project's node_modules (`npm ci` first).
# Nginx's pid, logs and the 1 MiB /big file go to a temporary directory (@WORKDIR@ in the .conf files),
# removed at exit.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
MODE=${1:-http}; ROUNDS=${2:-3}; DUR=${3:-6}
[ -d "$HERE/../../node_modules/undici" ] && [ -d "$HERE/../../node_modules/http-proxy-3" ] || {
  echo "run-anchors.sh: undici and http-proxy-3 are missing from node_modules; run npm ci in the project first" >&2; exit 1; }
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy nginx-light libnginx-mod-stream wrk >/dev/null; }; }
need haproxy; need nginx; need wrk
W=$(mktemp -d "${TMPDIR:-/tmp}/lb-anchors.XXXXXX")
# nginx's workers run as an unprivileged user when started as root: they must be able to read /big.
chmod 755 "$W"
head -c 1048576 /dev/urandom > "$W/big.bin"
chmod 644 "$W/big.bin"
sed "s#@WORKDIR@#$W#g" "$HERE/backend-nginx.conf" > "$W/backend.conf"
sed "s#@WORKDIR@#$W#g" "$HERE/nginx-proxy.conf" > "$W/proxy.conf"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
taskset -c 1 nginx -c "$W/backend.conf" & pids+=($!)
start() { taskset -c 0 "$@" & pids+=($!); }
if [ "$MODE" = http ]; then
  start haproxy -f "$HERE"/haproxy-http.cfg -db
  start nginx -c "$W/proxy.conf"
  PORT=18084 start node "$HERE"/node-bare-proxy.mjs
  PORT=18086 start node "$HERE"/node-httpproxy3.mjs
  PORT=18088 start node "$HERE"/node-undici-proxy.mjs
  targets=("direct 19001" "haproxy 18080" "nginx 18082" "node-http-bare 18084" "http-proxy-3 18086" "node-undici 18088")
else
  start haproxy -f "$HERE"/haproxy-tcp.cfg -db
  start nginx -c "$W/proxy.conf"
  PORT=18085 start node "$HERE"/node-tcp-proxy.mjs
  targets=("direct 19001" "haproxy-tcp 18081" "nginx-tcp 18083" "node-tcp-bare 18085")
fi
if [ -n "${EXTRA:-}" ]; then IFS=';' read -ra ex <<< "$EXTRA"; for e in "${ex[@]}"; do targets+=("$e"); done; fi
sleep 1.5
for t in "${targets[@]}"; do set -- $t; taskset -c 1 wrk -t1 -c64 -d2s http://127.0.0.1:$2/ >/dev/null 2>&1; done
for r in $(seq 1 $ROUNDS); do for t in "${targets[@]}"; do set -- $t
  if [ "$MODE" = http ]; then
    out=$(taskset -c 1 wrk -t1 -c64 -d${DUR}s --latency http://127.0.0.1:$2/ 2>&1)
    echo "round=$r $1 rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}') p50=$(echo "$out" | awk '$1=="50%" {print $2}') p99=$(echo "$out" | awk '$1=="99%" {print $2}') $(echo "$out" | grep -E "Non-2xx|Socket errors" | tr '\n' ' ')"
  else
    out=$(taskset -c 1 wrk -t1 -c8 -d${DUR}s http://127.0.0.1:$2/big 2>&1)
    echo "round=$r bulk $1 $(echo "$out" | awk '/Transfer\/sec/ {print "transfer_per_s=" $2}') $(echo "$out" | grep -E "Socket errors" | tr '\n' ' ')"
    out=$(taskset -c 1 wrk -t1 -c32 -d${DUR}s -H 'Connection: close' http://127.0.0.1:$2/ 2>&1)
    echo "round=$r new-conn $1 rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | grep -E "Socket errors" | tr '\n' ' ')"
  fi
done; done
