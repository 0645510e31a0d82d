#!/usr/bin/env bash
# One command for the point-in-time benchmark: release build, peers in their own venv,
# data generated once (cached under ~/.cache/hindcast-bench-data), then the comparison.
# Extra arguments go to pit_bench.py (e.g. --reps 5, --memory-limit 64M).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hindcast-target}"
cargo build --release -p hindcast-cli >&2
PYTHON="$(benches/setup_peers.sh)"
exec "$PYTHON" benches/pit_bench.py --hindcast "$CARGO_TARGET_DIR/release/hindcast" "$@"
