#!/usr/bin/env bash
# `npm run bench:observability`: what access logging and metrics cost on the hot path, beside the baseline
# rows of bench/anchors/run-anchors.sh in the same run. Starts three lb daemons (1 worker each, pinned to
# CPU 0 like every proxy of the rig) on the anchors' upstreams: plain (no access log, no metrics listener),
# with `log.access = true`, and with a metrics listener scraped every second; then runs
#   EXTRA="lb 8090;lb-access-log 8091;lb-metrics-scraped-1s 8092" run-anchors.sh http ROUNDS SECS
# and writes the raw rounds to bench/results/proxy/access-log-metrics-cost.txt. Only the target under load
# is busy at any moment; the others are idle. Everything is stopped at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANCHORS=$ROOT/bench/anchors
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
[ -x "$ANCHORS/run-anchors.sh" ] || { echo "bench/observability-cost.sh: $ANCHORS/run-anchors.sh not found" >&2; exit 1; }
[ -f "$ROOT/dist/src/cli.js" ] || { echo "bench/observability-cost.sh: run \`npm run build\` first" >&2; exit 1; }
TMP=$(mktemp -d /tmp/lb-obs.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
for v in plain:8090:false:no access:8091:true:no metrics:8092:false:yes; do
  IFS=: read -r name port access metrics <<< "$v"
  {
    printf '[daemon]\nworkers = 1\n[admin]\nsocket = "%s/%s.sock"\n[log]\nlevel = "info"\naccess = %s\n' "$TMP" "$name" "$access"
    [ "$metrics" = yes ] && printf '[metrics]\nlisten = "127.0.0.1:9191"\n'
    printf '[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:%s"\npool = "app"\n' "$port"
    printf '[pools.app]\nalgorithm = "round-robin"\nbackends = [ { address = "127.0.0.1:19001" }, { address = "127.0.0.1:19002" } ]\n'
  } > "$TMP/$name.toml"
  taskset -c 0 node "$ROOT/bin/lb.js" run -c "$TMP/$name.toml" > /dev/null 2>&1 &
  PIDS+=($!)
done
sleep 2
( while sleep 1; do curl -s -o /dev/null 127.0.0.1:9191/metrics || true; done ) &
PIDS+=($!)
mkdir -p "$ROOT/bench/results/proxy"
cd "$ROOT"
EXTRA="lb 8090;lb-access-log 8091;lb-metrics-scraped-1s 8092" "$ANCHORS/run-anchors.sh" http "$ROUNDS" "$SECS" 2>&1 | grep 'round=' | tee "$ROOT/bench/results/proxy/access-log-metrics-cost.txt"
