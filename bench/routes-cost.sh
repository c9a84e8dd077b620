#!/usr/bin/env bash
# `npm run bench:routes`: what route conditions, rewrites and splits cost per request, beside a listener
# without routes, in one run with interleaved rounds. Five lb daemons (1 worker each, pinned to CPU 0 like
# every proxy of bench/anchors), on one nginx upstream (CPU 1) that returns a 12-byte body:
#   none      no routes (the listener's pool)
#   plain     one host + path_prefix route (what routes were before conditions existed)
#   match     a route with a method, three header conditions (exact, prefix, regex), a cookie and a query
#             condition, all holding, behind two routes whose header conditions fail
#   rewrite   a route that sets two request headers from variables, adds one, removes one, strips a path
#             prefix, and sets a response header
#   split     a 95/5 split (not sticky)
# wrk (CPU 1): 64 kept-alive connections, the same headers for every target. Each round runs every target
# for SECS seconds; the raw rounds go to bench/results/routes/rounds.txt. Ports: BASE (default 29100) to
# BASE+5; they must be free. Read the ratios between rows of the same round.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
BASE=${BASE:-29100}
[ -f "$ROOT/dist/src/cli.js" ] || { echo "bench/routes-cost.sh: run \`npm run build\` first" >&2; exit 1; }
for p in $(seq "$BASE" $((BASE + 5))); do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "bench/routes-cost.sh: 127.0.0.1:$p is in use" >&2; exit 1; fi
done
TMP=$(mktemp -d /tmp/lb-routes.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
UP=$BASE
cat > "$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "hello world\n"; } } }
EOF
taskset -c 1 nginx -c "$TMP/nginx.conf" &
PIDS+=($!)

routes_none=''
routes_plain='[[listeners.web.routes]]
host = "bench.test"
path_prefix = "/api/"
pool = "app"'
routes_match='[[listeners.web.routes]]
headers = [{ name = "x-nope", exact = "1" }]
pool = "app"
[[listeners.web.routes]]
headers = [{ name = "x-canary", regex = "^no$" }]
pool = "app"
[[listeners.web.routes]]
methods = ["GET", "HEAD"]
headers = [{ name = "x-canary", exact = "1" }, { name = "x-ver", prefix = "v2" }, { name = "x-id", regex = "^[0-9a-f]{8}$" }]
cookies = [{ name = "beta", exact = "yes" }]
query = [{ name = "v", prefix = "2" }]
pool = "app"'
routes_rewrite='[[listeners.web.routes]]
path_prefix = "/api/"
strip_prefix = "/api"
pool = "app"
request_headers = { set = { "x-client" = "${client_ip}", "x-route" = "${route} ${host}" }, add = { "x-env" = "bench" }, remove = ["x-id"] }
response_headers = { set = { "x-served-by" = "${route}" } }'
routes_split='[[listeners.web.routes]]
split = [{ pool = "app", weight = 95 }, { pool = "app2", weight = 5 }]'

i=1
EXTRA=()
for name in none plain match rewrite split; do
  port=$((BASE + i))
  var="routes_$name"
  {
    printf '[daemon]\nworkers = 1\nstate_file = "%s/%s.state"\n[admin]\nsocket = "%s/%s.sock"\n[log]\nlevel = "warn"\n' "$TMP" "$name" "$TMP" "$name"
    printf '[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:%s"\npool = "app"\n%s\n' "$port" "${!var}"
    printf '[pools.app]\nbackends = [ { address = "127.0.0.1:%s" } ]\n[pools.app2]\nbackends = [ { address = "127.0.0.1:%s" } ]\n' "$UP" "$UP"
  } > "$TMP/$name.toml"
  taskset -c 0 node "$ROOT/bin/lb.js" run -c "$TMP/$name.toml" > "$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  EXTRA+=("$name:$port")
  i=$((i + 1))
done
for t in "${EXTRA[@]}"; do
  port=${t#*:}
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
mkdir -p "$ROOT/bench/results/routes"
OUT="$ROOT/bench/results/routes/rounds.txt"
: > "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${EXTRA[@]}"; do
    name=${t%%:*}
    port=${t#*:}
    rps=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}s" -H 'Host: bench.test' -H 'x-canary: 1' -H 'x-ver: v2.1' -H 'x-id: 0a1b2c3d' -H 'Cookie: session=abc; beta=yes' \
      "http://127.0.0.1:$port/api/items?v=2.0&x=1" | awk '/Requests\/sec/ {print $2}')
    echo "round=$r target=$name rps=$rps" | tee -a "$OUT"
  done
done
