#!/usr/bin/env bash
# The suite on a free-threaded CPython 3.13t (the GIL off): the interpreter
# comes from .ci/build_python_ft.sh (built once per machine, cached outside
# the clone); the package is built and installed into a fresh venv and the
# tests run from a copy outside the source tree, so the installed build is
# what gets imported.  PYTHON_GIL is unset: a module that turned the GIL
# back on would show (tests/linux/test_thread_hammer.py checks that
# importing portres keeps it off, and the hammer runs without it).
# Usage: bash .ci/free_threaded.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=$(bash .ci/build_python_ft.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"   # tests run code as uid 65534, which imports from the venv
cp -r tests docs README.md "$work/"
find "$work/tests" -name __pycache__ -prune -exec rm -rf {} +
"$py" -m venv "$work/venv"
# Wheels only: the newest sdists of the test tools need a Rust toolchain.
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: pytest hypothesis
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$root"
unset PYTHON_GIL
cd "$work"   # out of the source tree: import the installed build
"$work/venv/bin/python" -c 'import sys, portres
assert not sys._is_gil_enabled(), "importing portres turned the GIL on"
print("free-threaded", sys.version.split()[0], "GIL off after import portres")'
PORTRES_HAMMER_SECONDS=${PORTRES_HAMMER_SECONDS:-10} "$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
