#!/usr/bin/env bash
# .ci/lint.sh - static checks of the packaging and CI configuration:
#   actionlint          .github/workflows (with shellcheck and pyflakes on run: scripts)
#   zizmor              .github, offline, pedantic persona: any finding fails
#   validate-pyproject  pyproject.toml, with the cibuildwheel schema
#   cibuildwheel        the Windows (win32, win_amd64, win_arm64) and Linux
#                       (manylinux and musllinux, x86_64 and aarch64) wheels
#                       it would build, for every supported CPython
#   mypy --strict       the portres package, with the stubs of the C module
#   stubtest            portres/_portres.pyi against the built module
#   ruff                check: every Python file; format --check: the
#                       directories [tool.ruff.format] covers (pyproject.toml)
#   clang-format        --dry-run --Werror on src/ and tests/windows/ C, once
#                       a .clang-format exists
#   mypy                tests/ (the suites, their helpers, the netns scenarios)
#   check_collect_windows.py  no test module touches a Linux-only API at import
# It installs nothing: the tools come from requirements-dev.txt, installed
# into the Python that runs this script ($PYTHON, default python3), which must
# also have portres built in place (`python -m pip install -e .`), since
# stubtest imports the compiled module.  Works from any directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

python=${PYTHON:-python3}
# The tools' commands live in that Python's scripts directory (a venv's bin,
# a pyenv version's bin): put it first on PATH.
scripts=$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts:$PATH"
for tool in actionlint zizmor validate-pyproject cibuildwheel ruff clang-format; do
    command -v "$tool" >/dev/null || {
        echo "lint.sh: $tool not found; run: $python -m pip install -r requirements-dev.txt" >&2
        exit 2
    }
done
"$python" -c 'import mypy' 2>/dev/null || {
    echo "lint.sh: mypy not importable by $python; install requirements-dev.txt" >&2
    exit 2
}

step() { printf '== %s\n' "$*"; }

workflows=(.github/workflows/*.yml)
[[ -e "${workflows[0]}" ]] || { echo "lint.sh: no workflows in .github/workflows" >&2; exit 1; }

step "actionlint ${workflows[*]}"
actionlint "${workflows[@]}"
echo "actionlint: no problems in ${#workflows[@]} workflow files"

step "zizmor --offline --persona pedantic .github"
zizmor --offline --no-progress --persona pedantic .github

step "validate-pyproject pyproject.toml"
validate-pyproject pyproject.toml

# Every supported CPython: 3.9+ and the free-threaded builds cibuildwheel has.
versions=(cp39 cp310 cp311 cp312 cp313 cp314 cp314t)
check_identifiers() {   # PLATFORM SUFFIX...
    local platform=$1 ids missing=() suffix v
    shift
    ids=$(cibuildwheel --print-build-identifiers --platform "$platform" .)
    for suffix in "$@"; do
        for v in "${versions[@]}"; do
            grep -qx -- "$v-$suffix" <<<"$ids" || missing+=("$v-$suffix")
        done
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "cibuildwheel --platform $platform would not build: ${missing[*]}" >&2
        echo "it lists:" >&2
        echo "$ids" >&2
        return 1
    fi
    echo "cibuildwheel --platform $platform: $(wc -l <<<"$ids") wheels, including" \
         "${versions[*]} for each of: $*"
}
step "cibuildwheel --print-build-identifiers --platform windows"
check_identifiers windows win32 win_amd64 win_arm64
step "cibuildwheel --print-build-identifiers --platform linux"
check_identifiers linux manylinux_x86_64 manylinux_aarch64 musllinux_x86_64 musllinux_aarch64

step "mypy --strict portres"
"$python" -m mypy --strict portres

step "stubtest portres._portres"
"$python" -c 'import portres._portres' || {
    echo "lint.sh: portres._portres is not built here; run: $python -m pip install -e ." >&2
    exit 2
}
"$python" -m mypy.stubtest portres._portres

step "ruff check ."
ruff check .
step "ruff format --check ."
ruff format --check .

if [[ -f .clang-format ]]; then
    step "clang-format --dry-run --Werror (src/, tests/windows/)"
    mapfile -t c_files < <(find src tests/windows bench -name '*.[ch]' | sort)
    clang-format --dry-run --Werror --style=file "${c_files[@]}"
    echo "clang-format: ${#c_files[@]} files formatted"
else
    echo "== clang-format: no .clang-format yet, nothing to check"
fi

step "mypy tests (suites, helpers, netns scenarios)"
"$python" -m mypy tests

step "test modules import without Linux-only APIs (collection on Windows)"
"$python" .ci/check_collect_windows.py

echo "lint: all checks passed"
