#!/usr/bin/env bash
# Build portres._portres with AddressSanitizer + UndefinedBehaviorSanitizer
# (clang) in a scratch copy of the tree, run the whole pytest suite against
# it, and fail on any sanitizer report.  The working tree is not touched
# (its in-place extension stays the normal build).
#
#   bash .ci/sanitize.sh [pytest args...]      # default: tests; e.g. -x -k reservation tests
#   SANITIZE_PATCH=bug.diff bash .ci/sanitize.sh   # self-test: a patch injecting
#                                                  # a bug must make it fail
#
# Needs: clang and its runtime (Debian: apt-get install clang libclang-rt-14-dev).
# CPython itself is not instrumented: the ASan runtime is LD_PRELOADed into
# the interpreter and leak detection is off (CPython's own allocations at exit
# would drown everything; descriptor/memory leaks are measured by
# tests/linux/test_leaks.py and stress/leaks.py instead).  KEEP=1 keeps the scratch dir.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
CLANG=${CLANG:-clang}
PYTHON=${PYTHON:-python3}
if ! command -v "$CLANG" >/dev/null; then
    echo "sanitize.sh: $CLANG not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi
arch=$(uname -m)
asan_rt=$("$CLANG" -print-file-name="libclang_rt.asan-$arch.so")
if [ ! -f "$asan_rt" ]; then
    echo "sanitize.sh: ASan runtime $asan_rt missing (apt-get install libclang-rt-14-dev)" >&2
    exit 2
fi

work=$(mktemp -d /tmp/portres-sanitize.XXXXXX)
chmod 755 "$work"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
cd "$repo"
cp -r setup.py pyproject.toml README.md docs src portres tests "$work"/
if [ -n "${SANITIZE_PATCH:-}" ]; then   # self-test: inject a bug, expect a report
    patch -s -d "$work" -p1 <"$SANITIZE_PATCH"
fi
find "$work" \( -name '*.so' -o -name '__pycache__' -o -name '.hypothesis' \) -prune -exec rm -rf {} +
logs="$work/sanitizer-logs"
mkdir -p "$logs"
chmod 1777 "$logs"   # tests fork children that switch to uid 65534

san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
echo "== building with $("$CLANG" --version | head -1): $san"
(
    cd "$work"
    if ! CC="$CLANG" LDSHARED="$CLANG -shared" \
         CFLAGS="$san -fno-wrapv -g -O1 -Werror=implicit-function-declaration" \
         LDFLAGS="$san -shared-libasan" \
         "$PYTHON" setup.py -q build_ext --inplace >"$work/build.log" 2>&1; then
        # setup.py refused (e.g. a pyproject.toml newer than the installed
        # setuptools): compile the same sources directly.
        echo "   (setup.py build_ext failed, see below; compiling the sources directly)"
        tail -3 "$work/build.log" | sed 's/^/   | /'
        inc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
        ext=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
        # -fno-wrapv: CPython's own flags make signed overflow defined; ours must not rely on it
        "$CLANG" $san -fno-wrapv -g -O1 -fPIC -std=c11 -Wall -Wextra \
            -Werror=implicit-function-declaration -shared -shared-libasan \
            -I"$inc" -Isrc src/*.c src/linux/*.c src/windows/*.c \
            -o "portres/_portres$ext"
    fi
)
if ! nm -D "$work"/portres/_portres*.so | grep -c __asan_init >/dev/null; then
    echo "sanitize.sh: the extension was not built with ASan" >&2
    exit 1
fi

# Tools the tests start that are not Python (curl) run without the ASan
# runtime: preloaded, it hangs curl (seen with clang 14's runtime).
mkdir -p "$work/bin"
for tool in curl; do
    real=$(command -v "$tool" || true)
    [ -n "$real" ] || continue
    printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$@"\n' "$real" >"$work/bin/$tool"
    chmod +x "$work/bin/$tool"
done
export PATH="$work/bin:$PATH"
export LD_PRELOAD="$asan_rt"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:log_path=$logs/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87:log_path=$logs/ubsan"
export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
where=$(cd / && "$PYTHON" -c 'import portres._portres as m; print(m.__file__)')
case "$where" in
    "$work"/*) ;;
    *) echo "sanitize.sh: tests would import $where, not the sanitized build" >&2; exit 1 ;;
esac
echo "== pytest against $where"
start=$(date +%s)
set +e
# timeout: a hung test must not hang CI (it also gives pytest a default
# SIGINT disposition, which a background job would otherwise ignore)
(cd "$work" && timeout -k 30 "${SANITIZE_TIMEOUT:-1800}" "$PYTHON" -m pytest -q -p no:cacheprovider "${@:-tests}")
rc=$?
set -e
echo "== pytest exit status $rc in $(( $(date +%s) - start )) s"
reports=$(find "$logs" -type f | sort)
if [ -n "$reports" ]; then
    echo "== sanitizer reports:"
    for f in $reports; do echo "--- $f"; cat "$f"; done
    exit 1
fi
echo "== no sanitizer report"
exit "$rc"
