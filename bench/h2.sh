#!/usr/bin/env bash
# `npm run bench:h2`: h2load through lb, HAProxy and NGINX, each with HTTP/2 in front (h2c with prior
# knowledge, RFC 9113 §3.3) and HTTP/1.1 to two nginx upstreams (plus HAProxy and lb with h2c to an nginx
# upstream: "haproxy-h2be", "lb-h2be"). 1 lb worker; every proxy pinned to CPU 0 (taskset -c 0), h2load and the
# upstreams to CPU 1. Rounds are interleaved: each round runs every target once.
#
# Per run: h2load -c CONNS -m STREAMS -D SECS (after a 1 s warm-up), req/s from h2load, p99 from its
# per-request log (--log-file), CPU per request from the proxy process's utime+stime in /proc (lb: its
# worker). Writes bench/results/h2/raw.txt and bench/results/h2/README.md (medians, lb/HAProxy ratio).
# ROUNDS (3), SECS (5), CONNS (16), STREAMS (10) and OUT (the results directory) come from the
# environment. Needs h2load (nghttp2-client), haproxy, nginx; dist/ built.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench/h2
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-10}
OUT=${OUT:-$ROOT/bench/results/h2}

for bin in h2load haproxy nginx taskset; do
  command -v "$bin" >/dev/null || { echo "bench/h2.sh: $bin is missing (apt-get install nghttp2-client haproxy nginx-light util-linux)" >&2; exit 1; }
done
[ -f "$ROOT/dist/src/cli.js" ] || { echo "bench/h2.sh: dist/ is missing; run \`npm run build\` first" >&2; exit 1; }
for port in 18380 18381 18382 18383 18384 19301 19302 19303; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "bench/h2.sh: 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

W=$(mktemp -d /tmp/lb-h2bench.XXXXXX)
chmod 755 "$W"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sed "s#@WORKDIR@#$W#g" "$HERE/backend-nginx.conf" > "$W/backend.conf"
sed "s#@WORKDIR@#$W#g" "$HERE/nginx-proxy.conf" > "$W/proxy.conf"
sed -e "s#@ADMIN_SOCKET@#$W/admin.sock#" -e "s#@STATE@#$W/state.json#" "$HERE/lb.toml" > "$W/lb.toml"

taskset -c 1 nginx -c "$W/backend.conf" & pids+=($!)
taskset -c 0 haproxy -f "$HERE/haproxy.cfg" -db & pids+=($!); HAPROXY_PID=$!
taskset -c 0 nginx -c "$W/proxy.conf" & pids+=($!); NGINX_PID=$!
cd "$ROOT"
taskset -c 0 node bin/lb.js run -c "$W/lb.toml" > "$W/lb.log" 2>&1 & pids+=($!); LB_PID=$!

# lb's worker: the primary's child (the process that serves).
LB_WORKER=
for _ in $(seq 1 100); do
  LB_WORKER=$(cat /proc/$LB_PID/task/*/children 2>/dev/null | tr ' ' '\n' | grep -m1 . || true)
  if [ -n "$LB_WORKER" ] && curl -s -o /dev/null --max-time 1 --http2-prior-knowledge http://127.0.0.1:18380/; then break; fi
  kill -0 "$LB_PID" 2>/dev/null || { echo "bench/h2.sh: lb exited at start:" >&2; cat "$W/lb.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$LB_WORKER" ] || { echo "bench/h2.sh: lb's worker did not start" >&2; exit 1; }
for port in 18381 18382 18383 18384; do
  for _ in $(seq 1 100); do curl -s -o /dev/null --max-time 1 --http2-prior-knowledge http://127.0.0.1:$port/ && break; sleep 0.1; done
done

targets=("lb 18380 $LB_WORKER" "haproxy 18381 $HAPROXY_PID" "nginx 18382 $NGINX_PID" "haproxy-h2be 18383 $HAPROXY_PID" "lb-h2be 18384 $LB_WORKER")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK=$(getconf CLK_TCK)

mkdir -p "$OUT"
: > "$OUT/raw.txt"
echo "# h2load -c $CONNS -m $STREAMS -D $SECS --warm-up-time 1, h2c prior knowledge, $ROUNDS interleaved rounds; $(node --version); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1)" | tee -a "$OUT/raw.txt"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do
    set -- $t
    log="$W/h2load-$1.log"
    rm -f "$log"
    c0=$(ticks "$3")
    out=$(taskset -c 1 h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "$SECS" --warm-up-time 1 --log-file "$log" "http://127.0.0.1:$2/" 2>&1)
    c1=$(ticks "$3")
    rps=$(echo "$out" | awk '/^finished in/ {print $4}')
    ok=$(echo "$out" | awk '/^requests:/ {print $8}')
    failed=$(echo "$out" | awk '/^requests:/ {print $10}')
    # --log-file: start time, status, elapsed µs per request.
    p99=$(awk '{print $3}' "$log" | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f", a[i]/1000}')
    # CPU over the whole h2load run (warm-up included), per request counted in the log (warm-up excluded): an upper bound.
    cpu=$(awk -v d=$((c1 - c0)) -v hz="$CLK" -v n="$(wc -l < "$log")" 'BEGIN { printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0) }')
    echo "round=$r $1 rps=$rps p99_ms=$p99 cpu_us_per_req=$cpu ok=$ok failed=$failed" | tee -a "$OUT/raw.txt"
  done
done
node "$ROOT/bench/h2-report.mjs" "$OUT/raw.txt" > "$OUT/README.md"
cat "$OUT/README.md"
