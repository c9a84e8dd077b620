#!/usr/bin/env bash
# `npm run bench:backend-tls`: what TLS to backends (pools.NAME.tls) costs lb, against plain HTTP to the
# same nginx, in one run with interleaved rounds. Rig as bench/proxy.sh: lb with 1 worker pinned to CPU 0,
# nginx (1 worker) and wrk (-t1 -c64) on CPU 1, a 12-byte response.
#
# Four targets, each an lb http listener whose pool has one nginx backend:
#   plain       http backend, kept-alive connections
#   tls         https backend (ECDSA P-256, TLS 1.3), kept-alive connections: the handshake amortises
#   plain-new   http backend that closes after each response (keepalive_requests 1): a new connection per request
#   tls-new     https backend that closes after each response: a new TLS connection per request, resumed
#               from lb's session cache (nginx ssl_session_tickets on)
# Reported per target: median req/s and p99 over the rounds, and lb's CPU time per request (user + system
# of the primary and the worker from /proc, over the measured run). ROUNDS (default 3), SECS (default 6)
# and BASE (first of 8 ports, default 28480) come from the environment. Writes
# bench/results/backend-tls/README.md and raw.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-6}
BASE=${BASE:-28480}
OUT=$ROOT/bench/results/backend-tls
for tool in nginx wrk openssl; do command -v $tool >/dev/null || { echo "bench/backend-tls.sh: $tool is needed" >&2; exit 1; }; done
[ -f "$ROOT/dist/src/cli.js" ] || { echo "bench/backend-tls.sh: dist/ is missing; run \`npm run build\` first" >&2; exit 1; }
for i in $(seq 0 7); do
  if (exec 3<>/dev/tcp/127.0.0.1/$((BASE + i))) 2>/dev/null; then echo "bench/backend-tls.sh: port $((BASE + i)) is in use (set BASE)" >&2; exit 1; fi
done

W=$(mktemp -d /tmp/lb-btls.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nginx ports BASE..BASE+3, lb listeners BASE+4..BASE+7 (same order as TARGETS).
TARGETS=(plain tls plain-new tls-new)
cd "$W"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > srv.ext
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 2 -out srv.pem -extfile srv.ext 2>/dev/null
cat > nginx.conf <<EOF
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  ssl_certificate $W/srv.pem;
  ssl_certificate_key $W/srv.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:S:1m;
  ssl_session_tickets on;
  server { listen 127.0.0.1:$BASE; keepalive_requests 1000000; location / { return 200 "hello world\n"; } }
  server { listen 127.0.0.1:$((BASE + 1)) ssl; keepalive_requests 1000000; location / { return 200 "hello world\n"; } }
  server { listen 127.0.0.1:$((BASE + 2)); keepalive_requests 1; location / { return 200 "hello world\n"; } }
  server { listen 127.0.0.1:$((BASE + 3)) ssl; keepalive_requests 1; location / { return 200 "hello world\n"; } }
}
EOF
taskset -c 1 nginx -c "$W/nginx.conf" & pids+=($!)

{
  printf '[daemon]\nworkers = 1\ngrace_period = "1s"\nstate_file = "%s/state.json"\n[admin]\nsocket = "%s/admin.sock"\n[log]\nlevel = "warn"\n' "$W" "$W"
  for i in 0 1 2 3; do
    name=${TARGETS[$i]//-/_}
    printf '[listeners.%s]\nprotocol = "http"\nlisten = "127.0.0.1:%d"\npool = "%s"\n' "$name" $((BASE + 4 + i)) "$name"
    printf '[pools.%s]\nbackends = [{ address = "127.0.0.1:%d" }]\n' "$name" $((BASE + i))
    if [ $((i % 2)) = 1 ]; then printf 'tls = { ca = "ca.pem" }\n'; fi
  done
} > lb.toml
taskset -c 0 node "$ROOT/bin/lb.js" run -c "$W/lb.toml" > "$W/lb.log" 2>&1 & LB=$!
pids+=($LB)
for _ in $(seq 1 100); do
  ok=1
  for i in 0 1 2 3; do curl -sf -o /dev/null "http://127.0.0.1:$((BASE + 4 + i))/" || ok=0; done
  [ $ok = 1 ] && break
  sleep 0.2
done
[ $ok = 1 ] || { echo "bench/backend-tls.sh: lb did not answer on every listener" >&2; cat "$W/lb.log" >&2; exit 1; }

# CPU ticks (user + system) of lb's primary and its workers.
ticks() {
  local t=0 p
  for p in $LB $(pgrep -P $LB || true); do
    t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0)))
  done
  echo $t
}
HZ=$(getconf CLK_TCK)

# Warm up each target.
for i in 0 1 2 3; do taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$((BASE + 4 + i))/" >/dev/null 2>&1; done
mkdir -p "$OUT"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
RAW=$OUT/raw.txt
: > "$RAW"
for r in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2 3; do
    t0=$(ticks)
    out=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}"s --latency "http://127.0.0.1:$((BASE + 4 + i))/" 2>&1)
    t1=$(ticks)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    # wrk writes 850.00us, 2.50ms or 1.20s: in ms.
    p99=$(awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v); f = (u == "us") ? 0.001 : (u == "s") ? 1000 : 1; printf "%.2f", v * f }' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    us=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
    echo "round=$r target=${TARGETS[$i]} rps=$rps p99=$p99 cpu_us_per_req=$us requests=$reqs $errs" | tee -a "$RAW"
  done
done

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
{
  echo "# TLS to backends: cost against plain HTTP"
  echo
  echo "Generated by \`bench/backend-tls.sh\` ($(date -u +%Y-%m-%d), node $(node --version), $(nginx -v 2>&1 | sed 's/.*\///'), $ROUNDS rounds x ${SECS}s, interleaved)."
  echo "lb: 1 worker pinned to CPU 0; nginx backend and wrk -t1 -c64 on CPU 1; 12-byte responses."
  echo "CPU: user + system time of lb (primary and worker) over the run, divided by the requests."
  echo "Machine load average (1, 5, 15 min) at the start: $LOAD0; at the end: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)." 
  echo
  echo "| target | req/s (median) | p99 (median) | lb CPU µs/request (median) |"
  echo "|---|---|---|---|"
  for t in "${TARGETS[@]}"; do
    rps=$(grep " target=$t " "$RAW" | sed 's/.* rps=\([^ ]*\).*/\1/' | median)
    p99=$(grep " target=$t " "$RAW" | sed 's/.* p99=\([^ ]*\).*/\1/' | median)
    cpu=$(grep " target=$t " "$RAW" | sed 's/.* cpu_us_per_req=\([^ ]*\).*/\1/' | median)
    echo "| $t | $rps | ${p99}ms | $cpu |"
  done
  echo
  echo "Raw rounds (p99 in ms): [raw.txt](raw.txt)."
} > "$OUT/README.md"
cat "$OUT/README.md"
