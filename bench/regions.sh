#!/usr/bin/env bash
# The region simulation, in one command (about 70 s once built):
#   builds the release binaries (bench, mock-upstream, fly-fallback), then runs
#   `bench regions`: five mock upstreams standing for the design's regions, each behind its
#   simulated round trip (in its own network namespace when the machine allows it), one
#   fly-fallback in front, load from eight client locations; one region is cut (its packets
#   dropped) and brought back. Writes bench/results/regions/{results.md,results.json,
#   README-snippet.md,timeline.png}.
#
#   bench/regions.sh                    the simulation
#   bench/regions.sh --quick            6-second phases, to try it out
#   bench/regions.sh --net loopback     no namespaces (the cut is then the mock's hang fault)
#   bench/regions.sh --report           re-render from bench/results/regions/results.json
#
# Options go to `bench regions` (see `target/release/bench regions --help`). Whatever it
# started (processes, the bench-rsim-* namespaces and their links) is removed on exit, also
# after a failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
  -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
esac

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac

echo "bench/regions.sh: building release binaries" >&2
cargo build --release --quiet -p bench -p mock-upstream -p fly-fallback

# The charts need a font (Debian's fonts-dejavu-core, installed only when missing).
if [ -z "${BENCH_FONT:-}" ] && [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  bench/setup-peers.sh --no-portkey --no-litellm >&2
fi

# A safety net: `bench regions` removes its namespaces itself, and the processes it starts die
# with it (PR_SET_PDEATHSIG); this also catches a crash or a kill.
remove_namespaces() {
  command -v ip >/dev/null 2>&1 || return 0
  local ns pid link
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^bench-rsim-/ {print $1}'); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns delete "$ns" 2>/dev/null || true
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^brsim/ {split($2, a, "@"); print a[1]}'); do
    ip link delete "$link" 2>/dev/null || true
  done
}
trap remove_namespaces EXIT

export REGIONS_COMMAND="bench/regions.sh${*:+ $*}"
"$target_dir/release/bench" regions --no-build --bin-dir "$target_dir/release" "$@"
