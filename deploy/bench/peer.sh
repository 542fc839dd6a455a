#!/usr/bin/env bash
# The peer block of `make bench` (issue 21): slotproxy against predixy (the
# best peer, optional) and against the floor (examples/floor.rs: a server on
# the same runtime and decoder that answers every request itself), case by
# case, measured as the process's CPU time per request, throughput and
# latency. bench.sh runs it after its own cases (or alone, with
# BENCH_ONLY=peer) on the local cluster it started; report.py turns the CSV
# into the peer section of docs/benchmarks.md.
#
#   deploy/bench/peer.sh        # the cluster on $SLOTPROXY_BENCH_BASE_PORT is up
#
# Every run gets a fresh process of its mode (slotproxy with a minimal
# config, predixy, or the floor with the case's value size); once it answers
# SET, its utime+stime (/proc/PID/stat, all threads, in clock ticks) is read
# before and after one redis-benchmark run, and the process is stopped. The
# modes of a case run back to back, in the order slotproxy, predixy, floor in
# odd rounds and reversed in even rounds, so drift and warm-up effects fall
# on every mode alike. The ratios are taken within a round.
#
# GET cases need every key of the keyspace to hold a value of the case's
# size: before the first GET case of a size the keyspace is written through
# slotproxy (redis-cli --pipe, not measured), since SET runs with random
# keys leave some keys unwritten and others at the other size.
#
# Cases (redis-benchmark -c $BENCH_PEER_CLIENTS -r $BENCH_PEER_KEYSPACE):
#   set1 get1 set16 get16            -t set / -t get, 3-byte values, P=1 / P=16
#   mset10                           MSET of 10 keys on different slots
#                                    (k1:__rand_int__ v ... k10:__rand_int__ v),
#                                    P=1; one request = one MSET
#   set1_4k get1_4k set16_4k get16_4k  the same with 4 KiB values
#
# Environment (defaults in brackets):
#   PREDIXY                       predixy binary (deploy/bench/build-predixy.sh
#                                 builds one); unset: its column is skipped
#   BENCH_PEER_ROUNDS             rounds; even counts give both orders
#                                 equally often [4]
#   BENCH_PEER_REQUESTS           requests per run at P=1 [100000]
#   BENCH_PEER_REQUESTS_PIPELINED requests per run at P=16, 3-byte values
#                                 [1000000]
#   BENCH_PEER_REQUESTS_4K_PIPELINED  the same with 4 KiB values [250000]
#   BENCH_PEER_CLIENTS            redis-benchmark -c [50]
#   BENCH_PEER_KEYSPACE           redis-benchmark -r [100000]
#   BENCH_PEER_CASES              cases to run, in order [all of the above]
#   BENCH_PEER_RESULTS            CSV file [docs/bench-peer.csv]
#   SLOTPROXY_BENCH_BASE_PORT     cluster ports base..base+5 [7100];
#                                 slotproxy on base+92, predixy on base+93,
#                                 the floor on base+94
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/bench/lib.sh
. "$here/lib.sh"
root="$(cd "$here/../.." && pwd)"
cd "$root"

rounds="${BENCH_PEER_ROUNDS:-4}"
n1="${BENCH_PEER_REQUESTS:-100000}"
n16="${BENCH_PEER_REQUESTS_PIPELINED:-1000000}"
n16k="${BENCH_PEER_REQUESTS_4K_PIPELINED:-250000}"
c="${BENCH_PEER_CLIENTS:-50}"
keyspace="${BENCH_PEER_KEYSPACE:-100000}"
cases="${BENCH_PEER_CASES:-set1 get1 set16 get16 mset10 set1_4k get1_4k set16_4k get16_4k}"
results="${BENCH_PEER_RESULTS:-docs/bench-peer.csv}"
predixy="${PREDIXY:-}"
base="${SLOTPROXY_BENCH_BASE_PORT:-7100}"
hz="$(getconf CLK_TCK)"
work="target/bench/peer"
meta="target/bench/peer-meta.env"

declare -A port=([slotproxy]=$((base + 92)) [predixy]=$((base + 93)) [floor]=$((base + 94)))

for case in $cases; do
    case "$case" in
        set1 | get1 | set16 | get16 | mset10 | set1_4k | get1_4k | set16_4k | get16_4k) ;;
        *) echo "peer: unknown case $case" >&2; exit 2 ;;
    esac
done
if [ -n "$predixy" ]; then
    predixy="$(realpath "$predixy")"
    [ -x "$predixy" ] || { echo "peer: PREDIXY=$predixy is not an executable file" >&2; exit 2; }
fi
modes=(slotproxy)
[ -n "$predixy" ] && modes+=(predixy)
modes+=(floor)
for m in "${modes[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port[$m]}") 2>/dev/null; then
        echo "peer: port ${port[$m]} ($m) is in use; set SLOTPROXY_BENCH_BASE_PORT" >&2
        exit 1
    fi
done
redis-cli -p "$base" cluster info 2>/dev/null | grep -q cluster_state:ok ||
    { echo "peer: no healthy cluster on port $base" >&2; exit 1; }

mkdir -p "$work" "$(dirname "$results")"
echo "peer: building slotproxy and the floor (examples/floor.rs)" >&2
cargo build --release --quiet --bin slotproxy --example floor

# Configurations: slotproxy's defaults (one thread) apart from the listen
# address; predixy with one worker thread, reads from masters only (as
# slotproxy reads), every client allowed, only warnings logged.
cat >"$work/slotproxy.toml" <<EOF
[frontend]
listen = "127.0.0.1:${port[slotproxy]}"

[cluster]
seeds = ["127.0.0.1:$base"]

[log]
level = "warn"
EOF
{
    echo "Name slotproxy-bench"
    echo "Bind 127.0.0.1:${port[predixy]}"
    echo "WorkerThreads 1"
    echo "ClientTimeout 0"
    echo "LogVerbSample 0"
    echo "LogDebugSample 0"
    echo "LogInfoSample 0"
    echo "LogNoticeSample 0"
    echo "LogWarnSample 1"
    echo "LogErrorSample 1"
    echo "Authority {"
    echo "    Auth {"
    echo "        Mode admin"
    echo "    }"
    echo "}"
    echo "ClusterServerPool {"
    echo "    MasterReadPriority 100"
    echo "    StaticSlaveReadPriority 0"
    echo "    DynamicSlaveReadPriority 0"
    echo "    Servers {"
    for p in $(seq "$base" $((base + 5))); do echo "        + 127.0.0.1:$p"; done
    echo "    }"
    echo "}"
} >"$work/predixy.conf"

pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start MODE SIZE: a fresh process of MODE; sets $pid once it answers SET.
start() {
    local mode="$1" size="$2" log="$work/$1.log"
    case "$mode" in
        slotproxy) target/release/slotproxy --config "$work/slotproxy.toml" >>"$log" 2>&1 & ;;
        predixy) "$predixy" "$work/predixy.conf" >>"$log" 2>&1 & ;;
        floor) target/release/examples/floor "${port[floor]}" "$size" >>"$log" 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 1 150); do
        [ "$(redis-cli -p "${port[$mode]}" set bench:ready 1 2>/dev/null)" = OK ] && return
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "peer: $mode did not come up on port ${port[$mode]}; its log:" >&2
    tail -20 "$log" >&2
    exit 1
}

stop() {
    stop_process "$pid"
    pid=""
}

# case_info CASE: sets label, command, P, size, n and the redis-benchmark
# arguments (without -p) of a case.
case_info() {
    local i
    size=3
    case "$1" in
        *_4k) size=4096 ;;
    esac
    case "$1" in
        set16 | get16 | set16_4k | get16_4k) P=16 ;;
        *) P=1 ;;
    esac
    n=$n1
    if [ "$P" = 16 ]; then
        n=$n16
        [ "$size" = 4096 ] && n=$n16k
    fi
    args=(-c "$c" -n "$n" -r "$keyspace" -P "$P")
    case "$1" in
        set*) command=SET; args+=(-d "$size" -t set) ;;
        get*) command=GET; args+=(-d "$size" -t get) ;;
        mset10)
            command=MSET
            args+=(MSET)
            for i in $(seq 1 10); do args+=("k$i:__rand_int__" v); done
            ;;
    esac
    label="$command P=$P"
    [ "$1" = mset10 ] && label="MSET 10 keys"
    [ "$size" = 4096 ] && label="$label 4KiB"
    return 0
}

# prefill SIZE: every key:NNNNNNNNNNNN of the keyspace (redis-benchmark's
# key names) set to SIZE bytes, through a fresh slotproxy.
filled=""
prefill() {
    local out
    echo "peer: writing $keyspace keys of $1 bytes (not measured)" >&2
    start slotproxy 3
    out="$(python3 - "$keyspace" "$1" <<'EOF' | redis-cli -p "${port[slotproxy]}" --pipe 2>&1
import sys
count, size = int(sys.argv[1]), int(sys.argv[2])
value = b"$%d\r\n%s\r\n" % (size, b"x" * size)
out = sys.stdout.buffer
for i in range(count):
    out.write(b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n" % i + value)
EOF
)"
    stop
    grep -q 'errors: 0,' <<<"$out" || { echo "peer: prefill failed: $out" >&2; exit 1; }
    filled=$1
}

echo "round,order,case,mode,command,pipeline,value_bytes,clients,requests,rps,avg_ms,p50_ms,p95_ms,p99_ms,max_ms,cpu_ticks,cpu_us_per_request,sys_ticks,sys_us_per_request,loadavg,cmdline" >"$results"
runs=0

# run ROUND ORDER CASE MODE: one fresh process, one redis-benchmark run.
run() {
    local round="$1" order="$2" case="$3" mode="$4"
    local before after sys_before sys_after line us sys_us load cmdline
    local rps avg p50 p95 p99 max
    start "$mode" "$size"
    read -r before sys_before <<<"$(cpu_ticks "$pid")"
    line=$(redis-benchmark --csv -p "${port[$mode]}" "${args[@]}" 2>"$work/bench.err" | awk '/^"test"/ { getline; print }') || true
    kill -0 "$pid" 2>/dev/null || { echo "peer: $mode died during $case" >&2; exit 1; }
    read -r after sys_after <<<"$(cpu_ticks "$pid")"
    stop
    if [ -z "$line" ]; then
        echo "peer: redis-benchmark -p ${port[$mode]} ${args[*]} printed no result:" >&2
        cat "$work/bench.err" >&2
        exit 1
    fi
    # "NAME","rps","avg","min","p50","p95","p99","max"
    IFS=, read -r _ rps avg _ p50 p95 p99 max <<<"${line//\"/}"
    us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.3f", t * 1000000 / hz / n }')
    sys_us=$(awk -v t=$((sys_after - sys_before)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.3f", t * 1000000 / hz / n }')
    load=$(cut -d' ' -f1 /proc/loadavg)
    cmdline="redis-benchmark -p ${port[$mode]} ${args[*]}"
    echo "$round,$order,$label,$mode,$command,$P,$size,$c,$n,$rps,$avg,$p50,$p95,$p99,$max,$((after - before)),$us,$((sys_after - sys_before)),$sys_us,$load,\"$cmdline\"" >>"$results"
    runs=$((runs + 1))
    printf 'peer: round %s %-16s %-9s %10s req/s %7s cpu us/req  p99 %6s ms  (%s ticks, load %s)\n' \
        "$round" "$label" "$mode" "$rps" "$us" "$p99" $((after - before)) "$load" >&2
}

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "peer: modes ${modes[*]}; rounds=$rounds requests=$n1 / $n16 at P=16 / $n16k at P=16 4KiB; clients=$c keyspace=$keyspace CLK_TCK=$hz; load $load_start" >&2
[ -n "$predixy" ] || echo "peer: PREDIXY is not set: the predixy column is skipped" >&2
started=$SECONDS
for round in $(seq 1 "$rounds"); do
    order=("${modes[@]}")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = ${#modes[@]} - 1; i >= 0; i--)); do order+=("${modes[$i]}"); done
    fi
    for case in $cases; do
        case_info "$case"
        if [ "$command" = GET ] && [ "$filled" != "$size" ]; then prefill "$size"; fi
        if [ "$command" = SET ] && [ "$filled" != "$size" ]; then filled=mixed; fi
        for mode in "${order[@]}"; do
            run "$round" "$(tr ' ' '>' <<<"${order[*]}")" "$case" "$mode"
        done
    done
done

predixy_commit=""
if [ -n "$predixy" ]; then
    # build-predixy.sh leaves a note next to the binary; a binary built in a
    # checkout has its commit there.
    if [ -f "$predixy.build-info" ]; then
        predixy_commit="$(head -1 "$predixy.build-info")"
    else
        predixy_commit="$(git -C "$(dirname "$predixy")" log -1 --format='%h %s' 2>/dev/null || true)"
    fi
fi
cat >"$meta" <<EOF
date=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples Cargo.toml || echo ' (modified)')
nproc=$(nproc)
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
kernel=$(uname -r)
redis=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
loadavg_start=$load_start
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)
predixy=$predixy
predixy_build=$predixy_commit
clk_tck=$hz
clients=$c
keyspace=$keyspace
requests=$n1
requests_pipelined=$n16
requests_4k_pipelined=$n16k
rounds=$rounds
runs=$runs
seconds=$((SECONDS - started))
EOF
echo "peer: $runs runs in $((SECONDS - started)) s; results in $results" >&2
