#!/usr/bin/env bash
# What circuit breaking costs on the proxy path (docs/benchmarks.md, "Circuit breaking"): lb with 1 worker
# pinned to CPU 0 in front of two nginx upstreams on CPU 1, wrk -t1 -c64 keep-alive GETs, interleaved rounds
# of these configurations of the same pool:
#   base      none of it configured (the hot path's single checks only)
#   enabled   max_requests = 10000 (never reached) with max_queue, retry_on with statuses, a retry budget,
#             passive with consecutive_5xx, consecutive_gateway_errors and success_rate
#   queued    max_requests = 32 and max_queue = 1000: most requests wait in the queue (64 connections)
# and, with BASE=path/to/another/checkout (built), that checkout's lb on the base config ("before").
# Free ports are taken for everything; ROUNDS (default 3) and SECS (default 5) from the environment.
# Prints one line per run (variant, req/s, lb's CPU microseconds per request from /proc utime + stime of the
# primary and its worker) and the medians. On a shared machine the CPU per request is the steadier figure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
for tool in nginx wrk taskset; do command -v $tool >/dev/null || { echo "bench/breaker-cost.sh: $tool is needed" >&2; exit 1; }; done
[ -f "$ROOT/dist/src/cli.js" ] || { echo "bench/breaker-cost.sh: dist/ is missing; build first" >&2; exit 1; }

TMP=$(mktemp -d /tmp/lb-breaker.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

freeport() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
U1=$(freeport); U2=$(freeport); P=$(freeport)

mkdir -p "$TMP/ng"
cat > "$TMP/ng/nginx.conf" <<NG
daemon off;
master_process off;
worker_processes 1;
pid $TMP/ng/nginx.pid;
error_log $TMP/ng/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/ng/body;
  proxy_temp_path $TMP/ng/proxy;
  fastcgi_temp_path $TMP/ng/fastcgi;
  uwsgi_temp_path $TMP/ng/uwsgi;
  scgi_temp_path $TMP/ng/scgi;
  keepalive_requests 100000;
  server { listen 127.0.0.1:$U1; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$U2; location / { return 200 "ok\n"; } }
}
NG
taskset -c 1 nginx -p "$TMP/ng" -c "$TMP/ng/nginx.conf" > /dev/null 2>&1 &
PIDS+=($!)

config() { # $1 = name, $2 = extra pool keys, $3 = extra tables
  cat > "$TMP/$1.toml" <<TOML
[daemon]
workers = 1
grace_period = "1s"
state_file = "$TMP/$1.state.json"
[admin]
socket = "$TMP/$1.sock"
[log]
level = "warn"
[listeners.http]
protocol = "http"
listen = "127.0.0.1:$P"
pool = "app"
[pools.app]
backends = [ { address = "127.0.0.1:$U1" }, { address = "127.0.0.1:$U2" } ]
$2
$3
TOML
}
config base "" ""
config enabled 'max_requests = 10000
max_queue = 1000
retry_on = ["connect-failure", "reset", "gateway-error"]
retry_budget = { percent = 20, min_retries = 3 }' '[pools.app.passive]
consecutive_5xx = 5
consecutive_gateway_errors = 5
success_rate = { interval = "10s", min_requests = 100, min_hosts = 2 }'
config queued 'max_requests = 32
max_queue = 1000
queue_timeout = "10s"' ""

VARIANTS=(base enabled queued)
[ -n "${BASE:-}" ] && VARIANTS=(before "${VARIANTS[@]}")

run() { # $1 = variant
  local cli=$ROOT/bin/lb.js cfg=$TMP/$1.toml
  if [ "$1" = before ]; then cli=$BASE/bin/lb.js; cfg=$TMP/base.toml; fi
  taskset -c 0 node "$cli" run -c "$cfg" > "$TMP/$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$P/" && break; sleep 0.1; done
  taskset -c 1 wrk -t1 -c64 -d1s "http://127.0.0.1:$P/" > /dev/null # warm-up
  local before after out rps n
  before=$(ticks $pid)
  out=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}s" "http://127.0.0.1:$P/")
  after=$(ticks $pid)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  kill -TERM $pid; wait $pid 2>/dev/null || true
  # CPU time of lb (primary and worker) per request, in microseconds: steadier than req/s on a shared machine.
  echo "$1 $rps $(awk -v t=$((after - before)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')" | tee -a "$TMP/results"
}

ticks() { # utime + stime of a process and its children, in clock ticks
  local sum=0 p
  for p in $1 $(pgrep -P "$1"); do
    [ -r /proc/$p/stat ] && sum=$((sum + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $sum
}

for r in $(seq 1 "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do run "$v"; done
done
echo "median over $ROUNDS rounds of ${SECS}s: req/s, lb CPU us per request"
for v in "${VARIANTS[@]}"; do
  rps=$(awk -v v="$v" '$1 == v {print $2}' "$TMP/results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  cpu=$(awk -v v="$v" '$1 == v {print $3}' "$TMP/results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf "  %-8s %10s %8s\n" "$v" "$rps" "$cpu"
done
