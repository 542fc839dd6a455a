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
# Then counts the proxy's system calls, context switches and CPU time per
# request (perf stat on syscall tracepoints) over fixed-size runs at -c 50
# with P=1 and P=$PROFILE_PIPELINE, and at -c 1 -P 1
# (target/bench/perf-syscalls.txt), and splits sends and receives into client
# and node sockets with their average size, i.e. how well each side batches
# (perf record of the syscall tracepoints; target/bench/perf-batching.txt).
#
# Environment: PROFILE_SECONDS (15), PROFILE_FREQUENCY (999 Hz),
# PROFILE_PIPELINE (16), PROFILE_TEST (get), PROFILE_INFERNO (1: cargo
# install inferno when missing; 0: skip the flame graph),
# SLOTPROXY_PROFILE_BASE_PORT (7200; cluster on base..base+5, proxy on
# base+90).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

seconds="${PROFILE_SECONDS:-15}"
freq="${PROFILE_FREQUENCY:-999}"
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
perf record -F "$freq" -e cpu-clock --call-graph dwarf,16384 -p "$proxy_pid" -o "$work/perf.data" -- sleep "$seconds" 2>"$work/perf-record.log"
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

# System calls per request: perf stat on the proxy over a fixed number of requests.
events="syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read"
events="$events,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait"
events="$events,syscalls:sys_enter_futex,context-switches,cpu-clock"
: >"$work/perf-syscalls.txt"
for run in "50 1 200000" "50 $P 1000000" "1 1 20000"; do
    read -r clients depth n <<<"$run"
    perf stat -x, -e "$events" -p "$proxy_pid" -o "$work/perf-stat.csv" &
    stat_pid=$!
    sleep 0.5
    redis-benchmark -p "$proxy_port" -c "$clients" -n "$n" -P "$depth" -r 10000 -t "$test" --csv >"$work/perf-stat-bench.csv"
    kill -INT "$stat_pid"
    wait "$stat_pid" 2>/dev/null || true
    rps_run="$(awk -F'","' '/^"test"/ { getline; print $2 }' "$work/perf-stat-bench.csv")"
    {
        echo "# -c $clients -P $depth -t $test, $n requests, $rps_run req/s: per request"
        awk -F, -v n="$n" '/^[0-9]/ {
            v = $1 / n; name = $3
            if (name == "cpu-clock") { v = v * 1000; name = "proxy CPU time (us)" }
            printf "%-34s %10.3f\n", name, v
        }' "$work/perf-stat.csv"
    } >>"$work/perf-syscalls.txt"
done
echo "== proxy system calls, context switches and CPU time per request =="
cat "$work/perf-syscalls.txt"

# Sends and receives split by side (client sockets vs node sockets), with
# their average size: how well each side batches.
classify() { # prints "fd=front|back ..." for the proxy's TCP sockets
    local fd link ino line lport rport
    for fd in /proc/"$proxy_pid"/fd/*; do
        link="$(readlink "$fd" 2>/dev/null)" || continue
        [[ $link == socket:* ]] || continue
        ino="${link#socket:[}"; ino="${ino%]}"
        line="$(awk -v i="$ino" '$10 == i' /proc/net/tcp)"
        [ -n "$line" ] || continue
        read -r lport rport < <(awk '{ split($2, l, ":"); split($3, r, ":"); print l[2], r[2] }' <<<"$line")
        lport=$((16#$lport)); rport=$((16#$rport))
        if [ "$lport" = "$proxy_port" ]; then
            echo -n "${fd##*/}=front "
        elif [ "$rport" -ge "$base" ] && [ "$rport" -le $((base + 5)) ]; then
            echo -n "${fd##*/}=back "
        fi
    done
}
: >"$work/perf-batching.txt"
for depth in "$P" 1; do
    redis-benchmark -p "$proxy_port" -c 50 -n 2000000000 -P "$depth" -r 10000 -t "$test" -q >/dev/null 2>&1 &
    load_pid=$!
    sleep 2
    fds="$(classify)"
    perf record -q -e syscalls:sys_enter_sendto -e syscalls:sys_enter_recvfrom -p "$proxy_pid" \
        -o "$work/perf-batching.data" -- sleep 2 2>/dev/null
    kill "$load_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
    load_pid=""
    echo "# -c 50 -P $depth -t $test (2 s; sizes: bytes sent, or the receive buffer offered)" >>"$work/perf-batching.txt"
    perf script -i "$work/perf-batching.data" -F event,trace 2>/dev/null | python3 -c '
import collections, re, sys
kind = dict(x.split("=") for x in sys.argv[1].split())
count, size = collections.Counter(), collections.Counter()
for line in sys.stdin:
    m = re.search(r"sys_enter_(\w+):.*fd: (0x[0-9a-f]+).*?(?:len|size): (0x[0-9a-f]+)", line)
    if m:
        key = (m.group(1), kind.get(str(int(m.group(2), 16)), "other"))
        count[key] += 1
        size[key] += int(m.group(3), 16)
for key in sorted(count):
    print(f"{key[0]:9s} {key[1]:6s} {count[key] / 2:9.0f}/s  avg {size[key] / count[key]:7.0f} B")
' "$fds" >>"$work/perf-batching.txt"
done
echo "== sends and receives on client (front) and node (back) sockets =="
cat "$work/perf-batching.txt"

if [ "$want_inferno" = 1 ] && command -v inferno-flamegraph >/dev/null 2>&1; then
    perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$work/perf.folded"
    inferno-flamegraph --title "slotproxy, redis-benchmark -c 50 -P $P -t $test" \
        <"$work/perf.folded" >docs/bench-flamegraph.svg
    echo "profile: wrote docs/bench-flamegraph.svg ($(du -k docs/bench-flamegraph.svg | cut -f1) KiB)" >&2
fi
