# shellcheck shell=bash
# tests/windows/shadow_include.sh - sourced by run.sh and wheels.sh.
#
# shadow_include PYINC DIR: make DIR a shadow of the CPython include
# directory PYINC, symlinks to every entry but pyconfig.h, plus
# tests/windows/pyconfig.h.  Python.h does #include "pyconfig.h", and a
# quoted include looks in the including file's own directory before any -I
# directory: the host's (Linux) pyconfig.h next to Python.h would win over
# ours whatever the -I order.
shadow_include() {
    local pyinc=$1 dir=$2 entry
    mkdir -p "$dir"
    for entry in "$pyinc"/*; do
        [[ "$(basename "$entry")" == pyconfig.h ]] || ln -s "$entry" "$dir/"
    done
    cp tests/windows/pyconfig.h "$dir/pyconfig.h"
}
