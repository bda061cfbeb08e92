#!/usr/bin/env bash
# tests/windows/run.sh - check the Windows sources without Windows:
#   1. build the Windows backend (src/windows/*.c + src/error.c, also linked
#      into a DLL against ws2_32, iphlpapi and advapi32) and the test
#      programs tests/windows/test_windows.c (the backend against recording
#      seams and Wine's real Winsock) and tests/windows/test_kernel_model.c
#      (its overlapped state machine against a model of every documented
#      kernel outcome) with mingw-w64 for x86_64 and i686, all warnings as
#      errors;
#   2. compile-check (-fsyntax-only) every C file of the extension (src/*.c,
#      src/linux/*.c, src/windows/*.c) and a small Python.h sample against
#      the installed CPython headers with our Windows pyconfig.h, for both
#      archs, and for ARM64 with clang (--target=aarch64-w64-mingw32) when
#      clang can target it;
#   3. run both test programs under Wine (fresh WINEPREFIX, no display):
#      64-bit with wine64, 32-bit with Debian's wine32 (the 32-bit ABI:
#      ULONG64 tokens on the stack, a 32-bit SOCKET, stdcall).
# The exit status is 0 only if every program passed (or the first build
# failure's).  Without wine32 the i686 programs are built, not run, and the
# summary says so; REQUIRE_WINE32=1 (.ci/run) makes that a failure.
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
    for prog in test_windows test_kernel_model; do
        "$cc" "${cflags[@]}" -I src -o "$build/$prog-$arch.exe" \
            "tests/windows/$prog.c" -lws2_32 -liphlpapi -ladvapi32
    done
    echo "built: src/windows/*.c (+ linked DLL), tests/windows/test_windows.c," \
         "tests/windows/test_kernel_model.c ($arch)"
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

# Windows on Arm (win_arm64 wheels): clang, when it can target it, with
# mingw-w64's headers (architecture-neutral) and -fms-extensions, as
# mingw-w64's GCC and MSVC accept the anonymous struct members of
# mstcpip.h's INET_PORT_RESERVATION_INSTANCE.
arm64_note="ARM64 compile-only check: skipped (clang cannot target aarch64-w64-mingw32 here)"
if command -v clang >/dev/null 2>&1 \
        && echo 'int x;' | clang --target=aarch64-w64-mingw32 -fsyntax-only -x c - 2>/dev/null; then
    # mingw-w64's own headers: the directory of GCC's search list that
    # holds winsock2.h.
    mingw_inc=""
    while read -r dir; do
        [[ -f "$dir/winsock2.h" ]] && mingw_inc=$dir
    done < <(echo | x86_64-w64-mingw32-gcc -xc -E -v - 2>&1 \
                 | sed -n '/#include <...> search starts here:/,/End of search list./p')
    [[ -n "$mingw_inc" ]] || { echo "run.sh: mingw-w64's winsock2.h not found" >&2; exit 2; }
    clang_inc="$(clang -print-resource-dir)/include"
    arm64_flags=(--target=aarch64-w64-mingw32 -std=c11 -fsyntax-only -fms-extensions
                 -Wall -Wextra -Werror -nostdinc -isystem "$clang_inc" -isystem "$mingw_inc")
    for src in "${sources[@]}"; do
        clang "${arm64_flags[@]}" -I tests/windows -I "$shadow" -I src "$src"
        [[ ${#limited[@]} -eq 0 ]] || [[ "$src" == "$build/pyconfig_sample.c" ]] \
            || clang "${arm64_flags[@]}" "${limited[@]}" -I tests/windows -I "$shadow" -I src "$src"
    done
    arm64_note="ARM64 (clang --target=aarch64-w64-mingw32, $mingw_inc): syntax-checked ($portres_c)"
    echo "$arm64_note"
fi

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

# 32-bit programs run through the wine loader of Debian's wine32 package in
# the same (64-bit, WoW64) prefix.
wine32=""
for candidate in /usr/lib/wine/wine /usr/lib/i386-linux-gnu/wine/wine; do
    if [[ -x "$candidate" ]]; then
        wine32=$candidate
        break
    fi
done

failed=()
results=()
run_program() {   # LOADER EXE LABEL
    local loader=$1 exe=$2 label=$3 status last
    echo "running $(basename "$exe") under $("$loader" --version) ($label)"
    set +e
    # Wine's own first-run chatter goes to stderr; keep it out of the way.
    "$loader" "$exe" 2>"$build/wine-stderr.txt" | tee "$build/out.txt"
    status=${PIPESTATUS[0]}
    set -e
    last=$(tr -d '\r' <"$build/out.txt" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1 || true)
    [[ -n "$last" || $status -ne 0 ]] || status=99   # ended without its result line
    if [[ $status -ne 0 ]]; then
        [[ -s "$build/wine-stderr.txt" ]] && { echo "--- wine stderr ---"; cat "$build/wine-stderr.txt"; }
        failed+=("$(basename "$exe" .exe) ($label): exit $status")
    fi
    results+=("$(basename "$exe" .exe) ($label): ${last:-no result line} (exit $status)")
}
for prog in test_windows test_kernel_model; do
    run_program "$wine64" "$build/$prog-x86_64.exe" "x86_64, wine64"
done
if [[ -n "$wine32" ]]; then
    for prog in test_windows test_kernel_model; do
        run_program "$wine32" "$build/$prog-i686.exe" "i686, wine32"
    done
    i686_note="i686: run under 32-bit Wine ($wine32)"
else
    i686_note="i686: built, NOT run: 32-bit Wine is not installed (Debian: dpkg --add-architecture i386; apt-get update; apt-get install wine32:i386)"
    [[ "${REQUIRE_WINE32:-0}" == 1 ]] && failed+=("i686: wine32 missing and REQUIRE_WINE32=1")
fi

echo "=== summary ==="
echo "mingw-w64 builds (x86_64, i686): ok"
echo "syntax checks with Python $pyver headers: ok ($portres_c)"
echo "$arm64_note"
echo "$i686_note"
for r in "${results[@]}"; do
    echo "Wine: $r"
done
if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "Wine test programs: all passed"
