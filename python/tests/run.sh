#!/usr/bin/env bash
# The Python package's tests: a virtual environment from PyPI (default
# ~/.cache/hindcast-py-venv), the extension built into it with `maturin develop` (the dev
# profile, in the same target directory and with the same DataFusion features as
# `cargo test`, so DataFusion is not compiled again), then pytest. Extra arguments go to
# pytest (e.g. -k feast -x).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hindcast-target}"
VENV="${HINDCAST_PY_VENV:-$HOME/.cache/hindcast-py-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r python/tests/requirements.txt
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" develop --quiet
# The distributed tests start the CLI's `hindcast worker`s.
cargo build --quiet -p hindcast-cli
export HINDCAST_BIN="$CARGO_TARGET_DIR/debug/hindcast"
exec "$VENV/bin/python" -m pytest python/tests -q "$@"
