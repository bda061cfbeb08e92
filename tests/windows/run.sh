#!/usr/bin/env bash
# tests/windows/run.sh - check the Windows sources without Windows:
#   1. build the Windows backend (src/windows/*.c + src/error.c, also linked
#      into a DLL against ws2_32, iphlpapi and advapi32) and
#      tests/windows/test_windows.c with mingw-w64 for x86_64 and i686, all
#      warnings as errors;
#   2. compile-check (-fsyntax-only) every C file of the extension (src/*.c,
#      src/linux/*.c, src/windows/*.c) and a small Python.h sample against
#      the installed CPython headers with our Windows pyconfig.h, for both
#      archs;
#   3. run the x86_64 test program under Wine (fresh WINEPREFIX, no display).
# The exit status is the test program's (or the first build failure's).
# Env: PYTHON (default python3) picks the CPython headers; KEEP_BUILD=1 keeps
# the build directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

archs=(x86_64 i686)
cflags=(-std=c11 -Wall -Wextra -Werror -O2)
syntax_flags=(-std=c11 -fsyntax-only -Wall -Wextra -Werror)

for arch in "${archs[@]}"; do
    command -v "$arch-w64-mingw32-gcc" >/dev/null || {
        echo "run.sh: $arch-w64-mingw32-gcc not found (Debian: gcc-mingw-w64)" >&2
        exit 2
    }
done

build=$(mktemp -d "${TMPDIR:-/tmp}/portres-windows.XXXXXX")
cleanup() {
    # Stop this prefix's wineserver before deleting the prefix.
    if [[ -n "${WINEPREFIX:-}" && -d "${WINEPREFIX:-}" ]]; then
        WINEPREFIX="$WINEPREFIX" "${wineserver:-true}" -k >/dev/null 2>&1 || true
    fi
    if [[ "${KEEP_BUILD:-0}" == 1 ]]; then
        echo "build directory kept: $build"
    else
        rm -rf "$build"
    fi
}
trap cleanup EXIT

# ---- 1. native builds ------------------------------------------------------
for arch in "${archs[@]}"; do
    cc="$arch-w64-mingw32-gcc"
    objs=()
    for src in src/error.c src/windows/*.c; do
        obj="$build/$(basename "$src" .c)-$arch.o"
        "$cc" "${cflags[@]}" -I src -c "$src" -o "$obj"
        objs+=("$obj")
    done
    # Link it for real: every Win32 import (ws2_32, iphlpapi, advapi32)
    # must resolve, with the stdcall decorations of i686.
    "$cc" -shared -o "$build/windows-$arch.dll" "${objs[@]}" \
        -lws2_32 -liphlpapi -ladvapi32
    "$cc" "${cflags[@]}" -I src -o "$build/test_windows-$arch.exe" \
        tests/windows/test_windows.c -lws2_32 -liphlpapi
    echo "built: src/windows/*.c (+ linked DLL), tests/windows/test_windows.c ($arch)"
done

# ---- 2. compile-only checks against CPython's headers -----------------------
python=${PYTHON:-python3}
pyinc=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
[[ -f "$pyinc/Python.h" ]] || { echo "run.sh: no Python.h in $pyinc" >&2; exit 2; }
pyver=$("$python" -c "import sys; print('%d.%d' % sys.version_info[:2])")

# Python.h does #include "pyconfig.h", and a quoted include looks in the
# including file's own directory before any -I directory: the host's
# (Linux) pyconfig.h next to Python.h would win over ours whatever the -I
# order.  So compile against a shadow of the include directory: symlinks to
# every entry but pyconfig.h, plus tests/windows/pyconfig.h.
shadow="$build/include-python$pyver"
mkdir -p "$shadow"
for entry in "$pyinc"/*; do
    [[ "$(basename "$entry")" == pyconfig.h ]] || ln -s "$entry" "$shadow/"
done
cp tests/windows/pyconfig.h "$shadow/pyconfig.h"

# A sample binding, always checked: it proves pyconfig.h is ours and good
# enough for the Windows-only parts of the C API.
cat > "$build/pyconfig_sample.c" <<'EOF'
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "portres.h"
#if !defined(MS_WINDOWS) || SIZEOF_LONG != 4
#  error "not compiled against tests/windows/pyconfig.h"
#endif
static PyObject *
sample_call(PyObject *self, PyObject *args)
{
    unsigned long long token;
    long long fd;
    int err;
    (void)self;
    if (!PyArg_ParseTuple(args, "LK", &fd, &token))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    err = portres_associate((portres_socket)fd, (uint64_t)token);
    Py_END_ALLOW_THREADS
    if (err)
        return PyErr_SetExcFromWindowsErr(PyExc_OSError, err);
    if (PyErr_CheckSignals())
        return NULL;
    return PyLong_FromUnsignedLongLong(token);
}
static PyMethodDef sample_methods[] = {
    {"call", sample_call, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}
};
static int
sample_exec(PyObject *m)
{
    HANDLE ev = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (ev == NULL) {
        PyErr_SetFromWindowsErr(0);
        return -1;
    }
    CloseHandle(ev);
    return PyModule_AddIntConstant(m, "SIZEOF_PY_SSIZE_T",
                                   (long)sizeof(Py_ssize_t));
}
static PyModuleDef_Slot sample_slots[] = {
    {Py_mod_exec, (void *)sample_exec},
    {0, NULL}
};
static struct PyModuleDef sample_module = {
    PyModuleDef_HEAD_INIT, "_sample", NULL, 0, sample_methods, sample_slots,
    NULL, NULL, NULL
};
PyMODINIT_FUNC
PyInit__sample(void)
{
    return PyModuleDef_Init(&sample_module);
}
EOF

# Every C file of the extension: the binding (src/_*.c, src/error.c) and
# both backends (src/linux/ is empty under _WIN32, which this checks too).
sources=("$build/pyconfig_sample.c" src/*.c src/linux/*.c src/windows/*.c)
portres_c="checked: $(cd src && echo *.c linux/*.c windows/*.c)"
# 3.12+ headers: also as the cp312-abi3 wheel is built (setup.py).
limited=()
if "$python" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
    limited=(-DPy_LIMITED_API=0x030C0000)
    portres_c="$portres_c; also with Py_LIMITED_API=0x030C0000"
fi
for arch in "${archs[@]}"; do
    for src in "${sources[@]}"; do
        "$arch-w64-mingw32-gcc" "${syntax_flags[@]}" -I tests/windows \
            -I "$shadow" -I src "$src"
        [[ ${#limited[@]} -eq 0 ]] || [[ "$src" == "$build/pyconfig_sample.c" ]] \
            || "$arch-w64-mingw32-gcc" "${syntax_flags[@]}" "${limited[@]}" \
                   -I tests/windows -I "$shadow" -I src "$src"
    done
    echo "syntax-checked with Python $pyver headers ($arch):" \
         "sample and every src/*.c ($portres_c)"
done

# ---- 3. run under Wine -------------------------------------------------------
wine64=""
for candidate in wine64 /usr/lib/wine/wine64 /usr/lib/x86_64-linux-gnu/wine/wine64; do
    if command -v "$candidate" >/dev/null 2>&1; then
        wine64=$(command -v "$candidate")
        break
    fi
done
if [[ -z "$wine64" ]]; then
    echo "run.sh: wine64 not found (Debian: wine64)" >&2
    exit 2
fi
wineserver=$(dirname "$wine64")/wineserver
[[ -x "$wineserver" ]] || wineserver=$(command -v wineserver || echo true)

export WINEPREFIX="$build/wineprefix"
export WINEDEBUG=-all
export DISPLAY=
export WINEDLLOVERRIDES="mscoree,mshtml="   # no Mono/Gecko install prompts
mkdir -p "$WINEPREFIX"

echo "running test_windows-x86_64.exe under $("$wine64" --version)"
set +e
# Wine's own first-run chatter goes to stderr; keep it out of the way.
"$wine64" "$build/test_windows-x86_64.exe" 2>"$build/wine-stderr.txt"
status=$?
set -e
if [[ $status -ne 0 && -s "$build/wine-stderr.txt" ]]; then
    echo "--- wine stderr ---"
    cat "$build/wine-stderr.txt"
fi

if command -v /usr/lib/wine/wine >/dev/null 2>&1 \
        || [[ -x /usr/lib/i386-linux-gnu/wine/wine ]]; then
    i686_note="i686 built; not run (run it with 32-bit wine by hand)"
else
    i686_note="i686 compile-only: 32-bit Wine (wine32) is not installed"
fi

echo "=== summary ==="
echo "mingw-w64 builds (x86_64, i686): ok"
echo "syntax checks with Python $pyver headers: ok ($portres_c)"
echo "$i686_note"
if [[ $status -eq 0 ]]; then
    echo "Wine test (x86_64): passed"
else
    echo "Wine test (x86_64): FAILED (exit $status)"
fi
exit "$status"
