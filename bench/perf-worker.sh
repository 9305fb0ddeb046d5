#!/usr/bin/env bash
# Where workerd's CPU goes with the Worker, without the V8 inspector: builds the bundle with its
# wasm function names (as bench/profile-worker.sh), runs bench/profile-worker.mjs's load on it
# with V8 writing a perf map, records workerd with Linux `perf` and reports with
# bench/perf-report.mjs (by kind of code, by the Worker's code that asked for it, and the
# garbage collector's pauses).
#
#   bench/perf-worker.sh                                  # plain requests, 32 connections
#   bench/perf-worker.sh --mode stream --stream-model mock-stream-2x1ms
#   bench/perf-worker.sh --dist bench/worker-floors/js-gateway   # another bundle, for comparison
#   bench/perf-worker.sh --save before.json; ...; bench/perf-worker.sh --save after.json
#   node bench/perf-report.mjs --compare before.json after.json      # a change, side by side
#
# Needs `perf` (Debian: linux-perf) and the right to record another process (root, or
# kernel.perf_event_paranoid <= 1). Other arguments go to profile-worker.mjs.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/env.sh"
start="$PWD"
cd "$ROOT"
command -v perf >/dev/null || { echo "perf-worker: needs Linux perf (apt-get install linux-perf)" >&2; exit 1; }

dist=target/profile-dist
seconds=10
save=()
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) dist="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --save) save=(--save "$(cd "$start" && realpath -m "$2")"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ensure_worker_tools
ensure_node_modules
cargo build -q --release -p mock-upstream
if [ "$dist" = target/profile-dist ]; then
  WORKER_KEEP_NAMES=1 wrangler deploy --dry-run --outdir target/profile-dist >"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; exit 1; }
fi
# The load runs 4 s longer than the recording: 2 s to settle (after profile-worker's own 3 s
# warm-up), 2 s spare at the end.
node bench/profile-worker.mjs --dist "$dist" --profile off --seconds $((seconds + 4)) \
  --v8-flags --perf-basic-prof,--interpreted-frames-native-stack "${args[@]}" \
  >"$work/load.out" 2>"$work/load.err" &
pid=""
for _ in $(seq 120); do
  pid="$(sed -n 's/^workerd pid \([0-9]*\).*/\1/p' "$work/load.err")"
  [ -n "$pid" ] && break
  sleep 0.5
done
[ -n "$pid" ] || { cat "$work/load.err" >&2; exit 1; }
sleep 2
perf record -q -e cpu-clock -F 4000 -g -p "$pid" -o "$work/perf.data" -- sleep "$seconds" >/dev/null 2>&1
wait %1
cat "$work/load.out"
per_us="$(sed -n 's/.*workerd CPU \([0-9]*\) µs per.*/\1/p' "$work/load.out")"
perf script -i "$work/perf.data" 2>/dev/null |
  node bench/perf-report.mjs --bundle "$dist/index.js" ${per_us:+--per-us "$per_us"} "${save[@]}"
rm -f "/tmp/perf-$pid.map"
