#!/usr/bin/env bash
# tests/windows/wheels.sh - link real cp312-abi3 wheels for win_amd64 and
# win32 with mingw-w64, and check them:
#   1. compile every C file of the extension (the list setup.py uses) for
#      the target, Py_LIMITED_API=0x030C0000, against CPython 3.12+ headers
#      with tests/windows/pyconfig.h, all warnings as errors;
#   2. the Python symbols the objects import, each checked against the
#      stable ABI of 3.12 (abi3info's manifest), become a python3.def; an
#      import library for python3.dll is made from it with dlltool (no
#      Python binary is downloaded or needed);
#   3. link portres/_portres.pyd (ws2_32, iphlpapi, advapi32, python3.dll);
#   4. build the wheel (tag cp312-abi3-PLAT, RECORD with sha256 and sizes);
#   5. `abi3audit --strict` on it, and the .pyd's import table read with
#      objdump -p: python3.dll and system DLLs only, PyInit__portres exported.
# These wheels are verification artifacts; the wheels that ship come from
# cibuildwheel on real Windows runners.
# Env: PYTHON_ABI3 picks the 3.12+ interpreter whose headers are used
# (default: the oldest 3.12+ of PATH's python3.1x and pyenv's versions);
# WHEEL_DIR keeps the wheels there.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

py=${PYTHON_ABI3:-}
if [[ -z "$py" ]]; then
    candidates=(python3.12 python3.13 python3.14)
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)"/versions/3.1[2-9]*/bin/python3)
    fi
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null 2>&1 \
                && "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
            py=$candidate
            break
        fi
    done
fi
[[ -n "$py" ]] || { echo "wheels.sh: no CPython 3.12+ found (set PYTHON_ABI3): its headers build the cp312-abi3 wheel" >&2; exit 2; }
pyinc=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
[[ -f "$pyinc/Python.h" ]] || { echo "wheels.sh: no Python.h in $pyinc" >&2; exit 2; }
tool_py=${PYTHON:-python3}
"$tool_py" -m abi3audit --help >/dev/null 2>&1 \
    || { echo "wheels.sh: abi3audit not installed for $tool_py (pip install -r requirements-dev.txt)" >&2; exit 2; }

build=$(mktemp -d "${TMPDIR:-/tmp}/portres-wheels.XXXXXX")
trap '[[ "${KEEP_BUILD:-0}" == 1 ]] && echo "kept: $build" || rm -rf "$build"' EXIT

# The include directory without its (Linux) pyconfig.h, plus ours (see
# run.sh: a quoted include finds the including file's directory first).
shadow="$build/include"
mkdir -p "$shadow"
for entry in "$pyinc"/*; do
    [[ "$(basename "$entry")" == pyconfig.h ]] || ln -s "$entry" "$shadow/"
done
cp tests/windows/pyconfig.h "$shadow/pyconfig.h"

# setup.py's list: the binding and both backends (linux files are empty
# under _WIN32).
shopt -s nullglob
sources=(src/*.c src/linux/*.c src/windows/*.c)
shopt -u nullglob

out=${WHEEL_DIR:-$build/dist}
mkdir -p "$out"
for pair in x86_64:win_amd64 i686:win32; do
    arch=${pair%%:*}
    plat=${pair#*:}
    cc=$arch-w64-mingw32-gcc
    work="$build/$plat"
    mkdir -p "$work/obj"
    objs=()
    for src in "${sources[@]}"; do
        obj="$work/obj/$(echo "$src" | tr / _).o"
        "$cc" -std=c11 -O2 -Wall -Wextra -Werror -DNDEBUG \
            -DPy_LIMITED_API=0x030C0000 -D_WIN32_WINNT=0x0A00 \
            -I "$shadow" -I src -c "$src" -o "$obj"
        objs+=("$obj")
    done
    "$tool_py" tests/windows/wheel_tool.py def "$work/python3.def" "$arch-w64-mingw32-nm" "${objs[@]}"
    "$arch-w64-mingw32-dlltool" -d "$work/python3.def" -D python3.dll -l "$work/libpython3.a"
    mkdir -p "$work/portres"
    # -static-libgcc: no libgcc DLL; --exclude-all-symbols then an explicit
    # export keeps the table to PyInit__portres (PyMODINIT_FUNC is dllexport).
    "$cc" -shared -static-libgcc -o "$work/portres/_portres.pyd" "${objs[@]}" \
        -L "$work" -lpython3 -lws2_32 -liphlpapi -ladvapi32
    "$arch-w64-mingw32-objdump" -p "$work/portres/_portres.pyd" > "$work/objdump.txt"
    "$tool_py" tests/windows/wheel_tool.py imports "$plat" "$work/objdump.txt"
    wheel=$("$tool_py" tests/windows/wheel_tool.py wheel "$out" "$plat" "$work/portres/_portres.pyd")
    echo "built $(basename "$wheel")"
    # --strict: any symbol outside the stable ABI of 3.12 fails the run.
    "$tool_py" -m abi3audit --strict --verbose "$wheel" \
        || { echo "wheels.sh: abi3audit --strict failed on $(basename "$wheel")" >&2; exit 1; }
done
echo "wheels (win_amd64, win32): linked, abi3audit --strict clean, imports checked"
