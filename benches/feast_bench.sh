#!/usr/bin/env bash
# The Feast benchmark (benches/feast_bench.py): release builds of the hindcast CLI and of the
# Python package (into a virtual environment of its own with Feast and its DuckDB store,
# default ~/.cache/hindcast-feast-bench-venv), then the comparison. Arguments go to
# feast_bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hindcast-target}"
cargo build --release -p hindcast-cli >&2
BIN="$HOME/.cache/hindcast-bench-bin"
mkdir -p "$BIN"
objcopy --strip-all "$CARGO_TARGET_DIR/release/hindcast" "$BIN/hindcast"
VENV="${HINDCAST_FEAST_BENCH_VENV:-$HOME/.cache/hindcast-feast-bench-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'maturin>=1.9,<2' \
  'feast[duckdb]==0.67.*' 'pandas>=2.2' 'pyarrow>=18' >&2
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" develop --release --quiet >&2
exec "$VENV/bin/python" -W ignore benches/feast_bench.py --hindcast "$BIN/hindcast" "$@"
