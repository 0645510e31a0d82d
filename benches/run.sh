#!/usr/bin/env bash
# One command for the point-in-time benchmark: release build, peers in their own venv,
# data generated once (cached under ~/.cache/hindcast-bench-data), then the comparison.
# Extra arguments go to pit_bench.py (e.g. --reps 5, --memory-limit 64M); `--workload W
# [--reps N]` runs workload W with window_bench.py instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hindcast-target}"
cargo build --release -p hindcast-cli >&2
# The release build keeps line tables for profiling, which makes the binary about 770 MB;
# benchmark a stripped copy (about 140 MB), as a user would install, so that paging the
# binary back in after another engine's run is not part of hindcast's time.
BIN="$HOME/.cache/hindcast-bench-bin"
mkdir -p "$BIN"
objcopy --strip-all "$CARGO_TARGET_DIR/release/hindcast" "$BIN/hindcast"
PYTHON="$(benches/setup_peers.sh)"
# Workload W (windowed aggregations, benches/window_bench.py) has its own script: it
# compares whole outputs, not three numbers. `--workload W` runs it at its full size.
if [ "${1:-}" = "--workload" ] && [ "${2:-}" = "W" ]; then
  shift 2
  exec "$PYTHON" benches/window_bench.py --hindcast "$BIN/hindcast" \
    --labels 1000000 --transactions 50000000 "$@"
fi
exec "$PYTHON" benches/pit_bench.py --hindcast "$BIN/hindcast" "$@"
