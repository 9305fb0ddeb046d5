#!/usr/bin/env bash
# Where the Worker's time goes: builds the bundle with its wasm function names kept into
# target/profile-dist (the release build strips them), then runs bench/profile-worker.mjs on it:
#
#   bench/profile-worker.sh --mode plain --seconds 10         # CPU profile, top functions
#   bench/profile-worker.sh --mode stream --conns 20 --seconds 10
#   bench/profile-worker.sh --mode plain --profile off        # req/s and workerd CPU per request
#   bench/profile-worker.sh --trace 12 [--burst 20]           # added delay per stream event
#   bench/profile-worker.sh --hold 1000                       # memory per open stream
#
# `--dist DIR` after these arguments measures another bundle instead, e.g. one of the floors in
# bench/worker-floors/ (a JavaScript Worker doing less, for comparison).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/env.sh"
cd "$ROOT"
ensure_worker_tools
ensure_node_modules
cargo build -q --release -p mock-upstream
WORKER_KEEP_NAMES=1 wrangler deploy --dry-run --outdir target/profile-dist >/dev/null
exec node bench/profile-worker.mjs --dist target/profile-dist "$@"
