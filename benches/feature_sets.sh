#!/usr/bin/env bash
# Prints every crate that two of the project's builds would compile with different
# features (each such crate, and everything above it, is compiled twice). Silent when the
# builds agree. The builds: the README's first command (the shell), its second (the
# tests), the Rust example, and the Python module that maturin builds.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
tree() { cargo tree "$@" -f '{p} {f}' --prefix none 2>/dev/null | grep -v '(\*)' | sort -u; }
tree -p hindcast-cli -e no-dev > "$out/shell"
tree > "$out/tests"
tree -p hindcast > "$out/example"
tree -p hindcast-py -e no-dev > "$out/python"
python3 - "$out" <<'PY'
import sys, itertools
def load(path):
    crates = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 2:
            features = " ".join(p for p in parts[2:] if not p.startswith("("))
            crates.setdefault(parts[0] + " " + parts[1], set()).add(features)
    return crates
builds = {name: load(f"{sys.argv[1]}/{name}") for name in ["shell", "tests", "example", "python"]}
for (a, fa), (b, fb) in itertools.combinations(builds.items(), 2):
    for crate in sorted(set(fa) & set(fb)):
        if fa[crate] != fb[crate]:
            print(f"{a} vs {b}: {crate}: {sorted(fa[crate])} vs {sorted(fb[crate])}")
PY
