#!/usr/bin/env bash
# Compile every C file of the extension with all warnings as errors against
# the headers of each CPython found on this machine (Linux side; the Windows
# side is tests/windows/run.sh), then check the C style with clang-format.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
checked=0
seen=" "
candidates=(python3 python3.9 python3.10 python3.11 python3.12 python3.13 python3.14)
if command -v pyenv >/dev/null 2>&1; then   # every interpreter pyenv has installed
    candidates+=("$(pyenv root)"/versions/3.*/bin/python3)
fi
for py in "${candidates[@]}"; do
    [ -x "$py" ] || command -v "$py" >/dev/null 2>&1 || continue
    # only the Pythons portres supports (3.9+)
    inc=$("$py" -c 'import sys, sysconfig; assert sys.version_info >= (3, 9); print(sysconfig.get_paths()["include"])' 2>/dev/null) || continue
    [ -f "$inc/Python.h" ] || continue
    case "$seen" in *" $inc "*) continue ;; esac
    seen="$seen$inc "
    limited=()
    # 3.12+: also as the cp312-abi3 wheel is built (setup.py)
    if "$py" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
        limited=(-DPy_LIMITED_API=0x030C0000)
    fi
    for f in src/*.c src/linux/*.c src/windows/*.c; do
        gcc -std=c11 -fsyntax-only -Wall -Wextra -Werror -I "$inc" -I src "$f"
        [ ${#limited[@]} -eq 0 ] || gcc -std=c11 -fsyntax-only -Wall -Wextra -Werror "${limited[@]}" -I "$inc" -I src "$f"
    done
    echo "C files clean with -Wall -Wextra -Werror against $("$py" -c 'import sys; print(sys.version.split()[0])') headers"
    checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || { echo "no CPython headers found" >&2; exit 1; }
# One C style (.clang-format): every project C file as the formatter writes it.
c_files=(src/*.c src/*.h src/linux/*.c src/linux/*.h src/windows/*.c src/windows/*.h
         bench/_benchhelp.c tests/windows/test_windows.c)
if command -v clang-format >/dev/null 2>&1; then
    clang-format --dry-run --Werror "${c_files[@]}"
    echo "C files formatted as .clang-format says ($(clang-format --version | head -1))"
else
    echo "clang-format not found: style not checked (Debian: apt-get install clang-format)"
fi
