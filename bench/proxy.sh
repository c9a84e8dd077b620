#!/usr/bin/env bash
# `npm run bench:proxy`: lb beside HAProxy, NGINX and the hand-written Node proxies, on the rig of
# bench/anchors (run-anchors.sh: nginx upstreams on 127.0.0.1:19001/19002, wrk, interleaved rounds).
#
# Starts lb with 1 worker pinned to CPU 0 (taskset -c 0), an http listener on 127.0.0.1:8080 and a tcp
# listener on 127.0.0.1:8081, both round-robin over the anchors' upstreams; runs
#   EXTRA="lb 8080"     bench/anchors/run-anchors.sh http ROUNDS SECONDS
#   EXTRA="lb-tcp 8081" bench/anchors/run-anchors.sh l4   ROUNDS SECONDS
# from the project root (lb restarted between the two, like the rig's own proxies), and writes
# bench/results/proxy/README.md (ratios lb / node-undici,
# lb / http-proxy-3, lb-tcp / node-tcp-bare for bulk and new connections) beside the raw output.
# lb is stopped at the end, whatever happens. ROUNDS (default 3) and SECS (default 6) come from the
# environment. run-anchors.sh installs haproxy, nginx and wrk from Debian when they are missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANCHORS=$ROOT/bench/anchors
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-6}
OUT=$ROOT/bench/results/proxy

if [ ! -x "$ANCHORS/run-anchors.sh" ]; then
  echo "bench/proxy.sh: $ANCHORS/run-anchors.sh not found or not executable" >&2
  exit 1
fi
if [ ! -f "$ROOT/dist/src/cli.js" ]; then
  echo "bench/proxy.sh: dist/ is missing; run \`npm run build\` first" >&2
  exit 1
fi
for port in 8080 8081; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "bench/proxy.sh: 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

TMP=$(mktemp -d /tmp/lb-proxy.XXXXXX)
LB_PID=
cleanup() {
  if [ -n "$LB_PID" ] && kill -0 "$LB_PID" 2>/dev/null; then
    kill -TERM "$LB_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$LB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LB_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# lb in front of the anchors' nginx upstreams; the admin socket goes to this run's temporary directory.
sed "s#@ADMIN_SOCKET@#$TMP/admin.sock#" "$ROOT/bench/proxy-lb.toml" > "$TMP/lb.toml"

PIN=()
command -v taskset >/dev/null && PIN=(taskset -c 0)
cd "$ROOT"
# lb is started afresh for each mode, as run-anchors.sh starts its reference proxies afresh for each.
start_lb() {
  "${PIN[@]}" node bin/lb.js run -c "$TMP/lb.toml" > "$TMP/lb.log" 2>&1 &
  LB_PID=$!
  # lb answers (502/503 until the rig's upstreams start) once it listens.
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null --max-time 1 http://127.0.0.1:8080/; then break; fi
    if ! kill -0 "$LB_PID" 2>/dev/null; then echo "bench/proxy.sh: lb exited at start:" >&2; cat "$TMP/lb.log" >&2; exit 1; fi
    sleep 0.1
  done
  echo "bench/proxy.sh: lb (pid $LB_PID) on :8080 (http) and :8081 (tcp), ${PIN[*]:-not pinned}" >&2
}
stop_lb() {
  kill -TERM "$LB_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$LB_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$LB_PID" 2>/dev/null || true
  wait "$LB_PID" 2>/dev/null || true
  LB_PID=
}

mkdir -p "$OUT"
start_lb
EXTRA="lb 8080" "$ANCHORS/run-anchors.sh" http "$ROUNDS" "$SECS" | tee "$OUT/http.txt"
stop_lb
start_lb
EXTRA="lb-tcp 8081" "$ANCHORS/run-anchors.sh" l4 "$ROUNDS" "$SECS" | tee "$OUT/l4.txt"
stop_lb
node bin/lb.js bench proxy-report --http "$OUT/http.txt" --l4 "$OUT/l4.txt" --out "$OUT"
