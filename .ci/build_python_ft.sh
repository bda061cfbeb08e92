#!/usr/bin/env bash
# Build a free-threaded CPython 3.13 (3.13t, ./configure --disable-gil) once
# per machine, cached outside the clone, and print the interpreter's path.
#
# The source is Debian's python3.13 source package from trixie (the Debian
# release that carries 3.13), fetched from the mirror the machine's own
# Debian sources use.  apt runs with a sources list, lists directory and
# cache of its own under the cache directory, so the host's apt state is
# left as it was.  The tree is unpacked without Debian's patches
# (dpkg-source --skip-patches): they fit CPython to Debian's system layout
# (dist-packages, multiarch, ensurepip disabled), and with them a
# free-threaded build's venv puts lib/python3.13/site-packages on sys.path
# while pip installs into lib/python3.13t/site-packages.  A cached build is
# reused while it still starts and reports the GIL as optional.
#
#   PORTRES_CI_CACHE  cache directory (default /var/cache/portres-ci)
#   JOBS              make -j (default 2)
set -euo pipefail

cache=${PORTRES_CI_CACHE:-/var/cache/portres-ci}
prefix=$cache/python3.13t
py=$prefix/bin/python3.13t
jobs=${JOBS:-2}

stamp=$prefix/.built-by-portres-ci

usable() {
    [ -f "$stamp" ] && [ -x "$py" ] && "$py" -c 'import sys, sysconfig, ssl, zlib, ctypes
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1
assert sys.version_info[:2] == (3, 13)' 2>/dev/null
}

if usable; then
    echo "$py"
    exit 0
fi

# The mirror of the host's Debian sources: deb822 (*.sources) or one-line
# (*.list) format, the first http(s) URI that serves the Debian archive
# (not debian-security).
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*debian\/?$/ && $i !~ /security/) { print $i; exit } }' "$f")
    [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { if ($i ~ /debian\/?$/ && $i !~ /security/) { print $i; exit } break } }' "$f")
        [ -n "$mirror" ] && break
    done
fi
if [ -z "$mirror" ]; then
    echo "build_python_ft.sh: no Debian mirror found in /etc/apt/sources.list*" >&2
    exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

apt_dir=$cache/apt
src_dir=$cache/src
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d" "$src_dir"
cat > "$apt_dir/sources.list.d/trixie-src.sources" <<EOF
Types: deb-src
URIs: $mirror
Suites: trixie
Components: main
Signed-By: $keyring
EOF
apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
)
echo "== fetching Debian trixie's python3.13 source from $mirror" >&2
apt-get "${apt_opts[@]}" -qq update >&2
rm -rf "$src_dir"/python3.13*
(cd "$src_dir" && apt-get "${apt_opts[@]}" -qq --download-only source python3.13 >&2)
dsc=$(find "$src_dir" -maxdepth 1 -name 'python3.13_*.dsc' | sort | tail -n 1)
if [ -z "$dsc" ]; then
    echo "build_python_ft.sh: apt-get source python3.13 fetched no .dsc" >&2
    exit 1
fi
tree=$src_dir/python3.13-upstream
rm -rf "$tree"
dpkg-source --skip-patches -x "$dsc" "$tree" >&2

echo "== building $(basename "$tree") with --disable-gil (make -j$jobs)" >&2
build=$cache/build
rm -rf "$build" "$prefix"
mkdir -p "$build"
start=$(date +%s)
(
    cd "$build"
    "$tree/configure" --disable-gil --prefix="$prefix" --with-ensurepip=no >configure.log 2>&1 \
        || { tail -n 30 configure.log >&2; exit 1; }
    make -j"$jobs" >make.log 2>&1 || { tail -n 40 make.log >&2; exit 1; }
    make install >install.log 2>&1 || { tail -n 40 install.log >&2; exit 1; }
)
touch "$stamp"
echo "== built in $(( $(date +%s) - start )) s" >&2
if ! usable; then
    echo "build_python_ft.sh: $py does not start as a free-threaded 3.13 with ssl, zlib and ctypes" >&2
    exit 1
fi
echo "$py"
