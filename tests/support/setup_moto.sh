#!/usr/bin/env bash
# Installs moto's S3 server (a local, S3-compatible test server from PyPI) into its own
# virtual environment (default ~/.cache/hindcast-moto-venv) and prints its python's path.
# The S3 test (tests/s3.rs) runs this itself, so a fresh machine needs nothing by hand.
set -euo pipefail
VENV="${HINDCAST_MOTO_VENV:-$HOME/.cache/hindcast-moto-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
fi
if ! "$VENV/bin/python" -c 'import moto.server, boto3' 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5' >&2
fi
echo "$VENV/bin/python"
