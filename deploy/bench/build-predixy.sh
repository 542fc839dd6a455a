#!/usr/bin/env bash
# Builds predixy, the peer of `make bench`'s peer block (issue 21), from a
# source checkout the caller provides, into target/bench-peer/predixy, and
# prints that path:
#
#   git clone https://github.com/joyieldInc/predixy /somewhere/predixy
#   git -C /somewhere/predixy checkout ca1630a
#   deploy/bench/build-predixy.sh /somewhere/predixy
#   PREDIXY=target/bench-peer/predixy make bench
#
# predixy is open source (BSD-3-Clause) but its code never enters this
# repository: the checkout lives outside it, and the build happens in a copy
# under target/ (ignored by git), so neither tree gets the other's files.
#
# The figures in docs/benchmarks.md are of commit ca1630a (joyieldInc/predixy,
# "Merge pull request #185"), built with its own Makefile as
#   make -j2 LVL="-g -O3 -include ctime"
# LVL is its optimisation flags (its default is "-g -O3"); "-include ctime"
# because newer g++ no longer pulls <ctime> in through other headers and the
# build stops at the first use of time(). Another commit builds too, with a
# warning, as the figures would not be comparable.
#
# Environment: PREDIXY_JOBS  make -j [2]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tested=ca1630a
flags="-g -O3 -include ctime"
jobs="${PREDIXY_JOBS:-2}"

[ "$#" -eq 1 ] || { echo "usage: $0 PREDIXY_SOURCE_DIR" >&2; exit 2; }
src="$(realpath "$1")"
if [ ! -f "$src/src/Proxy.cpp" ] || [ ! -f "$src/src/Makefile" ]; then
    echo "build-predixy: $src is not a predixy source tree (no src/Proxy.cpp)" >&2
    exit 2
fi
command -v g++ >/dev/null 2>&1 || { echo "build-predixy: g++ is required (apt-get install g++ make)" >&2; exit 1; }

out="$root/target/bench-peer"
build="$out/build"
commit="$(git -C "$src" rev-parse --short=7 HEAD 2>/dev/null || echo unknown)"
if [ "$commit" != "$tested" ]; then
    echo "build-predixy: $src is at $commit, the figures in docs/benchmarks.md are of $tested" >&2
fi

# A clean copy of the sources: the committed tree when it is a git checkout
# (no stray objects of an earlier build), else the directory as it is.
rm -rf "$build"
mkdir -p "$build"
if [ "$commit" != unknown ]; then
    git -C "$src" archive HEAD | tar -x -C "$build"
    dirty="$(git -C "$src" status --porcelain --untracked-files=no)"
    [ -z "$dirty" ] || echo "build-predixy: $src has uncommitted changes; building the committed tree" >&2
else
    cp -a "$src/." "$build/"
    make -C "$build" clean >/dev/null 2>&1 || true
fi

echo "build-predixy: make -j$jobs LVL=\"$flags\" in $build" >&2
make -C "$build" -j"$jobs" LVL="$flags" >"$out/build.log" 2>&1 ||
    { tail -30 "$out/build.log" >&2; echo "build-predixy: build failed; log in $out/build.log" >&2; exit 1; }
cp "$build/src/predixy" "$out/predixy"
# Read by deploy/bench/peer.sh for the report: the first line is shown.
{
    echo "$commit of joyieldInc/predixy, make -j$jobs LVL=\"$flags\", g++ $(g++ -dumpfullversion)"
    echo "source: $src"
    echo "built: $(date -u '+%Y-%m-%d %H:%M UTC')"
} >"$out/predixy.build-info"
echo "$out/predixy"
