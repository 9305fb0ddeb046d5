#!/usr/bin/env bash
# The one command for the whole comparison on a fresh machine:
#   builds the release binaries (bench, mock-upstream, fly-fallback), installs the peers
#   (bench/setup-peers.sh: Portkey from npm, LiteLLM from PyPI, a font from apt), runs every
#   scenario against every target, and writes bench/results/{results.md,results.json,
#   machine.md,README-snippet.md,*.png}.
#
#   bench/run.sh                  the comparison (about 10-15 minutes)
#   bench/run.sh --quick          shorter everything, for trying it out
#   bench/run.sh soak [--duration 10m] [--rate 1000] [--targets fly-fallback]
#   bench/run.sh smoke            a few seconds, direct and fly-fallback only; exit 0 when fine
#   bench/run.sh report           re-render tables and charts from bench/results/results.json
#
# Options after the subcommand go to `bench` (see `target/release/bench run --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sub="run"
case "${1:-}" in
  run|soak|smoke|report) sub="$1"; shift ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
esac

echo "bench/run.sh: building release binaries" >&2
cargo build --release --quiet -p bench -p mock-upstream -p fly-fallback

if [ "$sub" = "run" ]; then
  bench/setup-peers.sh
  # The Worker is measured from the bundle `wrangler deploy` would upload (dist/).
  echo "bench/run.sh: building the Worker bundle" >&2
  (source scripts/lib/env.sh && ensure_worker_tools && ensure_node_modules && scripts/check-bundle)
fi

exec target/release/bench "$sub" "$@"
