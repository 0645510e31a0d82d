#!/usr/bin/env bash
# Installs the Python peers the benchmarks compare against (DuckDB, Polars, and the
# `datafusion` package for stock DataFusion plans; `deltalake` writes --delta's tables) into their own virtual
# environment (default ~/.cache/hindcast-bench-venv) and prints its python's path.
set -euo pipefail
VENV="${HINDCAST_BENCH_VENV:-$HOME/.cache/hindcast-bench-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  'duckdb>=1.4' 'pyarrow>=18' 'polars>=1.0' 'datafusion>=45' 'matplotlib>=3.8' \
  'deltalake>=1.0' >&2
echo "$VENV/bin/python"
