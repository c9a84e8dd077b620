#!/usr/bin/env bash
# `npm run bench:lb-ab -- REV`: lb as built here against lb at an earlier git revision REV, on HTTP, to tell
# a regression of lb's own data path from rig noise (bench/proxy.sh compares lb with HAProxy and NGINX,
# whose figures move with the machine's load as lb's do, but not always by the same factor).
#
# REV is checked out in a temporary git worktree and built there (with this checkout's node_modules). Both
# builds run at once, 1 worker each (bench/proxy-lb.toml; the old one on :18080), on CPU 0; wrk -t1 -c64 and
# the anchors' nginx upstreams (127.0.0.1:19001/19002) on CPU 1, as in the rig; alternating runs of SECS
# seconds, ROUNDS rounds, the order swapped every round. Writes bench/results/proxy/lb-ab.txt: req/s and
# µs of CPU per request (utime + stime of the lb processes from /proc) per run, and the medians.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANCHORS=$ROOT/bench/anchors
REV=${1:?usage: bench/lb-ab.sh REV (a git revision to compare with)}
ROUNDS=${ROUNDS:-6}
SECS=${SECS:-4}
OUT=$ROOT/bench/results/proxy
[ -f "$ROOT/dist/src/cli.js" ] || { echo "bench/lb-ab.sh: dist/ is missing; run \`npm run build\` first" >&2; exit 1; }
for tool in nginx wrk taskset git; do command -v $tool >/dev/null || { echo "bench/lb-ab.sh: $tool is needed" >&2; exit 1; }; done
OLD_SHA=$(git -C "$ROOT" rev-parse --short "$REV")
NEW_SHA=$(git -C "$ROOT" rev-parse --short HEAD)

TMP=$(mktemp -d /tmp/lb-lbab.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  git -C "$ROOT" worktree remove --force "$TMP/old" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

git -C "$ROOT" worktree add --detach "$TMP/old" "$REV" > /dev/null 2>&1
ln -s "$ROOT/node_modules" "$TMP/old/node_modules"
(cd "$TMP/old" && npx tsc -p tsconfig.json)

sed "s#@WORKDIR@#$TMP#g" "$ANCHORS/backend-nginx.conf" > "$TMP/up.conf"
sed "s#@ADMIN_SOCKET@#$TMP/new.sock#" "$ROOT/bench/proxy-lb.toml" > "$TMP/new.toml"
sed -e "s#@ADMIN_SOCKET@#$TMP/old.sock#" -e 's/127.0.0.1:8080/127.0.0.1:18080/' -e 's/127.0.0.1:8081/127.0.0.1:18081/' "$ROOT/bench/proxy-lb.toml" > "$TMP/old.toml"

taskset -c 1 nginx -c "$TMP/up.conf" > /dev/null 2>&1 &
PIDS+=($!)

ticks() {
  local t=0 p
  for p in $1 $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo $t
}
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
HZ=$(getconf CLK_TCK)
run() {
  local name=$1 pid=$2 port=$3 a b out n
  a=$(ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}s" "http://127.0.0.1:$port/")
  b=$(ticks "$pid")
  n=$(echo "$out" | awk '/requests in/ {print $1}' | tr -d ,)
  echo "$name rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}') cpu_us_per_req=$(( (b - a) * 1000000 / HZ / n ))"
}

mkdir -p "$OUT"
: > "$OUT/lb-ab.txt"
say() { echo "$*" | tee -a "$OUT/lb-ab.txt"; }
say "# bench/lb-ab.sh, $(date -u +%FT%TZ), node $(node -v), load average at start: $(cut -d' ' -f1 /proc/loadavg)"
say "## http: 64 kept-alive connections; old = $OLD_SHA, new = $NEW_SHA; both alive, alternating"
taskset -c 0 node "$TMP/old/bin/lb.js" run -c "$TMP/old.toml" > "$TMP/old.log" 2>&1 &
O=$!; PIDS+=($O)
taskset -c 0 node "$ROOT/bin/lb.js" run -c "$TMP/new.toml" > "$TMP/new.log" 2>&1 &
N=$!; PIDS+=($N)
wait_port 18080; wait_port 8080
for p in 18080 8080; do taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$p/" > /dev/null; done
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then
    say "round=$r $(run old $O 18080)"; say "round=$r $(run new $N 8080)"
  else
    say "round=$r $(run new $N 8080)"; say "round=$r $(run old $O 18080)"
  fi
done
median() { grep " $1 " "$OUT/lb-ab.txt" | sed -nE "s/.* rps=([0-9.]+).*/\1/p" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
say "median old rps=$(median old) new rps=$(median new)"
