#!/usr/bin/env bash
# `make profile`: a CPU profile of the release proxy under redis-benchmark
# GET load (-c 50 -P 16), with perf (software cpu-clock sampling, DWARF call
# graphs; works in VMs without hardware counters).
#
# Writes target/bench/perf.data, target/bench/perf-self.txt (perf report
# --no-children: where the time is spent), target/bench/perf-children.txt
# (inclusive time per function) and, when `inferno` is installed or can be
# installed with cargo, docs/bench-flamegraph.svg.
#
# Environment: PROFILE_SECONDS (10), PROFILE_PIPELINE (16), PROFILE_TEST
# (get), PROFILE_INFERNO (1: cargo install inferno when missing; 0: skip the
# flame graph), SLOTPROXY_PROFILE_BASE_PORT (7200; cluster on base..base+5,
# proxy on base+90).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

seconds="${PROFILE_SECONDS:-10}"
P="${PROFILE_PIPELINE:-16}"
test="${PROFILE_TEST:-get}"
want_inferno="${PROFILE_INFERNO:-1}"
base="${SLOTPROXY_PROFILE_BASE_PORT:-7200}"
proxy_port=$((base + 90))
work="target/bench"
mkdir -p "$work"

if ! command -v perf >/dev/null 2>&1; then
    echo "profile: installing perf (linux-perf)" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq linux-perf >/dev/null
fi
if [ "$want_inferno" = 1 ] && ! command -v inferno-flamegraph >/dev/null 2>&1; then
    echo "profile: installing inferno (cargo install inferno)" >&2
    cargo install --quiet --locked inferno || echo "profile: inferno did not install; no flame graph" >&2
fi

SLOTPROXY_CLUSTER_BASE_PORT="$base" deploy/local/cluster.sh start >&2
cargo build --release --quiet
target/release/slotproxy --listen "127.0.0.1:$proxy_port" --seed "127.0.0.1:$base" --log-level warn &
proxy_pid=$!
load_pid=""
cleanup() {
    [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null || true
    kill "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    SLOTPROXY_CLUSTER_BASE_PORT="$base" deploy/local/cluster.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$proxy_port" set profile:ready 1 2>/dev/null)" = OK ] && break
    sleep 0.1
done

# Keys for GET to find.
redis-benchmark -p "$proxy_port" -c 50 -n 200000 -P 16 -r 10000 -t set -q >/dev/null
# Load for longer than the recording; stopped once perf is done.
redis-benchmark -p "$proxy_port" -c 50 -n 2000000000 -P "$P" -r 10000 -t "$test" -q >/dev/null 2>&1 &
load_pid=$!
sleep 2
echo "profile: recording slotproxy (pid $proxy_pid) for $seconds s under redis-benchmark -c 50 -P $P -t $test" >&2
perf record -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$proxy_pid" -o "$work/perf.data" -- sleep "$seconds" 2>"$work/perf-record.log"
rps="$(redis-cli -p "$proxy_port" info stats 2>/dev/null | awk -F: '/^instantaneous_ops_per_sec/ { print $2 }' | tr -d '\r')"
kill "$load_pid" 2>/dev/null || true
wait "$load_pid" 2>/dev/null || true
load_pid=""

perf report -i "$work/perf.data" --no-children --stdio --percent-limit 0.5 \
    --sort symbol -g none 2>/dev/null >"$work/perf-self.txt"
perf report -i "$work/perf.data" --children --stdio --percent-limit 2 \
    --sort symbol -g none 2>/dev/null >"$work/perf-children.txt"
perf report -i "$work/perf.data" --no-children --stdio --sort dso -g none 2>/dev/null >"$work/perf-dso.txt"
echo "== self time (perf report --no-children), top 40 =="
grep -v '^#' "$work/perf-self.txt" | grep -v '^$' | head -40
echo "== by binary =="
grep -v '^#' "$work/perf-dso.txt" | grep -v '^$' | head -8
[ -n "$rps" ] && echo "proxy instantaneous_ops_per_sec at the end: $rps"

if [ "$want_inferno" = 1 ] && command -v inferno-flamegraph >/dev/null 2>&1; then
    perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$work/perf.folded"
    inferno-flamegraph --title "slotproxy, redis-benchmark -c 50 -P $P -t $test" \
        <"$work/perf.folded" >docs/bench-flamegraph.svg
    echo "profile: wrote docs/bench-flamegraph.svg ($(du -k docs/bench-flamegraph.svg | cut -f1) KiB)" >&2
fi
