#!/usr/bin/env bash
# The one test suite against every CPython 3.9+ on this machine: build a
# wheel with each (3.12+ gives the cp312-abi3 wheel), install it into a fresh
# venv, and run the tests from a copy outside the source tree, so the
# installed wheel is what gets imported.  Usage: bash .ci/multi_python.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
chmod 755 "$work"   # tests run parts as uid 65534, which must read the copy
trap 'rm -rf "$work"' EXIT
cp -r tests README.md docs "$work/"
find "$work/tests" -name __pycache__ -prune -exec rm -rf {} +

candidates=()
if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.*/bin/python3)
fi
seen=" "
ran=0
failed=""
for py in "${candidates[@]}"; do
    [ -x "$py" ] || continue
    ver=$("$py" -c 'import sys; assert sys.version_info >= (3, 9); print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    case "$seen" in *" $ver "*) continue ;; esac
    seen="$seen$ver "
    echo "== CPython $ver"
    venv="$work/venv-$ver"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$root[test]" 
    (cd "$work" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests) || failed="$failed $ver"
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || echo "no pyenv interpreters found: nothing to do"
if [ -n "$failed" ]; then
    echo "failed on CPython$failed" >&2
    exit 1
fi
