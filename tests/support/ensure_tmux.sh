#!/usr/bin/env bash
# The shell test (tests/shell.rs) types into a real terminal through tmux; install it if
# this machine lacks it (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
if command -v tmux >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq tmux >&2
command -v tmux >/dev/null
