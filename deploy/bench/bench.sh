#!/usr/bin/env bash
# `make bench`: direct Redis Cluster access and slotproxy, measured case by
# case in one run (direct, then through the proxy, for every case), on a local
# 6-node cluster. The SET/GET, latency and 10-key MSET cases also run
# through the proxy's Unix socket (mode proxy_unix; information, the targets
# are checked over TCP). Prints a table of ratios against the targets of issue #8 and
# writes docs/benchmarks.md (between its generated-section markers), the chart
# docs/bench-throughput.png, and the raw figures docs/bench-results.csv and
# docs/bench-memory.csv.
#
# Then the peer block (deploy/bench/peer.sh, issue 21): slotproxy against
# predixy (PREDIXY=/path/to/predixy; built by deploy/bench/build-predixy.sh,
# skipped when unset) and against the floor (examples/floor.rs), CPU per
# request, throughput and p99, in its own section of docs/benchmarks.md and
# docs/bench-peer.csv. Its settings (BENCH_PEER_*) are described in peer.sh.
#
# Then the migration block (deploy/bench/migration.sh, issue 22): the live
# migration's copy rate (keys/s, MB/s) while slotproxy serves
# redis-benchmark load, and the load's throughput during the copy as a ratio
# to without it; docs/bench-migration.csv and a summary on stderr. Its
# settings (BENCH_MIGRATION_*) are described in migration.sh.
#
# Environment (defaults in brackets):
#   BENCH_REQUESTS            requests per run at pipeline depth < 4 [100000]
#   BENCH_REQUESTS_PIPELINED  requests per run at depth >= 4 [500000]
#                             (4 KiB cases use a quarter of either, 100-key
#                             MGET a tenth)
#   BENCH_LATENCY_REQUESTS    requests of the 1-client latency runs [20000]
#   BENCH_CLIENTS             redis-benchmark -c [50]
#   BENCH_KEYSPACE            redis-benchmark -r [10000]
#   BENCH_SWEEP               pipeline depths of the chart [1 2 4 8 16 32]
#   BENCH_ROUNDS              rounds of all cases; the report shows medians
#                             and the range of each ratio [3]
#   BENCH_IDLE_CLIENTS        idle connections of the memory case [10000]
#   BENCH_ONLY                "memory" runs the memory case alone (quick
#                             check; the report is not rewritten); "peer"
#                             runs the peer block alone and rewrites its
#                             section only; "migration" runs the migration
#                             block alone
#   PREDIXY                   predixy binary for the peer block [unset:
#                             its column is skipped]
#   SLOTPROXY_BENCH_BASE_PORT cluster ports base..base+5 [7100]; proxies on
#                             base+90 and base+91
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

n1="${BENCH_REQUESTS:-100000}"
np="${BENCH_REQUESTS_PIPELINED:-500000}"
nlat="${BENCH_LATENCY_REQUESTS:-20000}"
c="${BENCH_CLIENTS:-50}"
keyspace="${BENCH_KEYSPACE:-10000}"
sweep="${BENCH_SWEEP:-1 2 4 8 16 32}"
rounds="${BENCH_ROUNDS:-3}"
idle_clients="${BENCH_IDLE_CLIENTS:-10000}"
only="${BENCH_ONLY:-}"
case "$only" in
    "" | memory | peer | migration) ;;
    *) echo "bench: BENCH_ONLY is memory, peer or migration, not $only" >&2; exit 2 ;;
esac
peer_results="${BENCH_PEER_RESULTS:-docs/bench-peer.csv}"
export BENCH_PEER_RESULTS="$peer_results"
base="${SLOTPROXY_BENCH_BASE_PORT:-7100}"
proxy_port=$((base + 90))
mem_port=$((base + 91))
work="target/bench"
results="docs/bench-results.csv"
memory="docs/bench-memory.csv"
mkdir -p "$work" docs
# The proxy's Unix socket (a short path: sun_path holds 107 bytes).
sockdir="$(mktemp -d /tmp/slotproxy-bench.XXXXXX)"
sock="$sockdir/slotproxy.sock"

"$here/ensure-bench-deps.sh"

# The memory case holds $idle_clients sockets in this shell's children and in
# the proxy: raise the soft descriptor limit to the hard one.
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -gt 1048576 ]; then hard=1048576; fi
ulimit -Sn "$hard"
if [ "$hard" -lt $((idle_clients + 512)) ]; then
    idle_clients=$((hard - 512))
    echo "bench: ulimit -Hn is $hard; the memory case opens $idle_clients clients" >&2
fi

SLOTPROXY_CLUSTER_BASE_PORT="$base" deploy/local/cluster.sh start >&2
echo "bench: building the release binary" >&2
cargo build --release --quiet

# max_clients above the idle-client count (the default is 10000).
config="$work/slotproxy.toml"
cat >"$config" <<EOF
[frontend]
listen = "127.0.0.1:$proxy_port"
unix_socket = "$sock"
max_clients = $((idle_clients + 1000))

[cluster]
seeds = ["127.0.0.1:$base"]

[log]
level = "warn"
EOF

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    SLOTPROXY_CLUSTER_BASE_PORT="$base" deploy/local/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$sockdir"
}
trap cleanup EXIT

# start_proxy PORT: runs slotproxy on PORT, sets $proxy_pid once it routes.
start_proxy() {
    target/release/slotproxy --config "$config" --listen "127.0.0.1:$1" &
    proxy_pid=$!
    pids+=("$proxy_pid")
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p "$1" set bench:ready 1 2>/dev/null)" = OK ] && return
        sleep 0.1
    done
    echo "bench: slotproxy on port $1 did not come up" >&2
    exit 1
}

masters=()
for p in $(seq "$base" $((base + 5))); do
    if redis-cli -p "$p" role 2>/dev/null | head -1 | grep -q master; then masters+=("$p"); fi
done
# The master that owns the hash tag {bench}, for single-slot direct runs.
owner=""
for p in "${masters[@]}"; do
    if [ "$(redis-cli -p "$p" set '{bench}probe' 1 2>/dev/null)" = "OK" ]; then owner=$p; break; fi
done
[ -n "$owner" ] || { echo "bench: no master owns {bench}" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Idle-client memory: a fresh proxy (no allocator history from the load
# cases), 10,000 connections opened, then one PING on each, then closed.
memory_case() {
    echo "bench: memory case: $idle_clients idle clients on a fresh proxy" >&2
    start_proxy "$mem_port"
    local out
    out="$(python3 "$here/idle_clients.py" --port "$mem_port" --pid "$proxy_pid" --count "$idle_clients")"
    kill "$proxy_pid"
    wait "$proxy_pid" 2>/dev/null || true
    {
        echo "metric,value"
        awk '{ print $1 "," $2 }' <<<"$out"
    } >"$memory"
    cat "$memory" >&2
}

if [ "$only" = memory ]; then
    memory_case
    exit 0
fi
if [ "$only" = migration ]; then
    "$here/migration.sh"
    exit 0
fi
if [ "$only" = peer ]; then
    "$here/peer.sh"
    python3 "$here/report.py" --peer-results "$peer_results" --peer-meta "$work/peer-meta.env" \
        --markdown docs/benchmarks.md
    exit 0
fi

start_proxy "$proxy_port"
main_proxy_pid=$proxy_pid

# ---------------------------------------------------------------------------
# One redis-benchmark run = one CSV row. The same arguments go to both sides;
# direct adds --cluster (or targets the owning master for one-slot cases).
#
# Direct runs use --threads 1: in cluster mode redis-benchmark otherwise starts
# one thread per master, and a thread whose clients are done only notices the
# end of the run at its next 250 ms timer tick, so the elapsed time (and
# requests/s) is rounded to 250 ms steps: 200,000 requests at P=16 then read
# 796,813 req/s (0.251 s) whatever the real rate. With one thread the run ends
# with its last reply, and both sides drive the load from one client thread.
echo "round,case,mode,command,pipeline,value_bytes,clients,requests,rps,avg_ms,min_ms,p50_ms,p95_ms,p99_ms,max_ms,loadavg,cmdline" >"$results"
round=1
total_runs=0

# measure CASE MODE COMMAND P SIZE -- redis-benchmark args...
measure() {
    local case="$1" mode="$2" cmd="$3" P="$4" size="$5"
    shift 6
    local line clients requests
    clients=$(awk '{ for (i = 1; i < NF; i++) if ($i == "-c") print $(i + 1) }' <<<"$*")
    requests=$(awk '{ for (i = 1; i < NF; i++) if ($i == "-n") print $(i + 1) }' <<<"$*")
    line=$(redis-benchmark --csv "$@" 2>/dev/null | awk '/^"test"/ { getline; print }')
    if [ -z "$line" ]; then
        echo "bench: redis-benchmark $* printed no result" >&2
        exit 1
    fi
    # "NAME","rps","avg",...: drop the test name, keep the numbers.
    line=$(sed 's/^"[^"]*",//; s/"//g' <<<"$line")
    local cmdline="redis-benchmark $*"
    echo "$round,$case,$mode,$cmd,$P,$size,$clients,$requests,$line,$(cut -d' ' -f1 /proc/loadavg),\"${cmdline//\"/\"\"}\"" >>"$results"
    total_runs=$((total_runs + 1))
    printf 'bench: %-28s %-14s %12s req/s\n' "$case" "$mode" "$(cut -d, -f1 <<<"$line")" >&2
}

# pair CASE CMD P SIZE -- args...: direct (--cluster), then through the proxy.
pair() {
    local case="$1" cmd="$2" P="$3" size="$4"
    shift 5
    measure "$case" direct "$cmd" "$P" "$size" -- --cluster --threads 1 -p "$base" "$@"
    measure "$case" proxy "$cmd" "$P" "$size" -- -p "$proxy_port" "$@"
}

requests_for() { # P SIZE
    local n=$n1
    if [ "$1" -ge 4 ]; then n=$np; fi
    if [ "$2" -gt 64 ]; then n=$((n / 4)); fi
    echo "$n"
}

# LPUSH appends to one list per node (mylist, mylist:{tag}): drop them after
# each run so 4 KiB runs do not pile up gigabytes.
drop_lists() {
    local p k
    for p in "${masters[@]}"; do
        for k in $(redis-cli -p "$p" --scan --pattern 'mylist*'); do
            redis-cli -p "$p" unlink "$k" >/dev/null
        done
    done
}

# Throughput, -c $c: SET, GET (of the keys SET wrote), INCR, LPUSH.
throughput_block() { # SIZE
    local size="$1" P n t
    for P in 1 16; do
        n=$(requests_for "$P" "$size")
        for t in set get incr lpush; do
            if [ "$t" = incr ] && [ "$size" != 3 ]; then continue; fi
            pair "${t^^} P=$P ${size}B" "${t^^}" "$P" "$size" -- -c "$c" -n "$n" -P "$P" -r "$keyspace" -d "$size" -t "$t"
            if [ "$t" = set ] || [ "$t" = get ]; then
                measure "${t^^} P=$P ${size}B" proxy_unix "${t^^}" "$P" "$size" -- -s "$sock" -c "$c" -n "$n" -P "$P" -r "$keyspace" -d "$size" -t "$t"
            fi
            if [ "$t" = lpush ]; then drop_lists; fi
        done
    done
}

sweep_block() {
    local P n t
    for P in $sweep; do
        # 1 and 16 are measured by throughput_block.
        if [ "$P" = 1 ] || [ "$P" = 16 ]; then continue; fi
        n=$(requests_for "$P" 3)
        for t in set get; do
            pair "${t^^} P=$P 3B" "${t^^}" "$P" 3 -- -c "$c" -n "$n" -P "$P" -r "$keyspace" -d 3 -t "$t"
        done
    done
}

# p50/p99 at low load: 1 client, no pipelining.
latency_block() {
    local t
    for t in set get; do
        pair "latency ${t^^}" "${t^^}" 1 3 -- -c 1 -n "$nlat" -P 1 -r "$keyspace" -d 3 -t "$t"
        measure "latency ${t^^}" proxy_unix "${t^^}" 1 3 -- -s "$sock" -c 1 -n "$nlat" -P 1 -r "$keyspace" -d 3 -t "$t"
    done
}

mset_cross=(MSET); mget_cross=(MGET); mset_tag=(MSET); mget_tag=(MGET)
mget100=(MGET); mget100_tag=(MGET); mset100=(MSET); mset100_tag=(MSET)
for i in $(seq 0 9); do
    mset_cross+=("k:$i" xxx); mget_cross+=("k:$i")
    mset_tag+=("{bench}$i" xxx); mget_tag+=("{bench}$i")
done
for i in $(seq 0 99); do
    mget100+=("k:$i"); mget100_tag+=("{bench}$i")
    mset100+=("k:$i" xxx); mset100_tag+=("{bench}$i" xxx)
done

# Multi-key: the proxy splits keys across slots; the cluster cannot, so the
# direct figure is the same command with hash-tagged keys on the owning
# master. proxy_oneslot = those hash-tagged keys through the proxy (no split).
multikey_case() { # CASE CMD N -- cross-args -- tagged-args
    local case="$1" cmd="$2" n="$3"
    shift 4
    local cross=() tagged=()
    while [ "$1" != -- ]; do cross+=("$1"); shift; done
    shift
    tagged=("$@")
    measure "$case" direct "$cmd" 1 3 -- -p "$owner" -c "$c" -n "$n" "${tagged[@]}"
    measure "$case" proxy "$cmd" 1 3 -- -p "$proxy_port" -c "$c" -n "$n" "${cross[@]}"
    measure "$case" proxy_oneslot "$cmd" 1 3 -- -p "$proxy_port" -c "$c" -n "$n" "${tagged[@]}"
    if [ "$cmd" = MSET ]; then
        measure "$case" proxy_unix "$cmd" 1 3 -- -s "$sock" -c "$c" -n "$n" "${cross[@]}"
    fi
}

multikey_block() {
    # Every key the MGETs read exists (3-byte values).
    redis-cli -p "$proxy_port" "${mset100[@]}" >/dev/null
    redis-cli -p "$owner" "${mset100_tag[@]}" >/dev/null
    multikey_case "MSET 10 keys" MSET "$n1" -- "${mset_cross[@]}" -- "${mset_tag[@]}"
    multikey_case "MGET 10 keys" MGET "$n1" -- "${mget_cross[@]}" -- "${mget_tag[@]}"
    multikey_case "MGET 100 keys" MGET $((n1 / 10)) -- "${mget100[@]}" -- "${mget100_tag[@]}"
}

started=$SECONDS
for round in $(seq 1 "$rounds"); do
    echo "bench: round $round of $rounds" >&2
    # 3-byte cases first: the 4 KiB SET overwrites the keys GET reads.
    throughput_block 3
    sweep_block
    latency_block
    multikey_block
    throughput_block 4096
done
load_seconds=$((SECONDS - started))
# Peak RSS of the proxy that served the load.
load_hwm=$(awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$main_proxy_pid/status")
kill "$main_proxy_pid"
wait "$main_proxy_pid" 2>/dev/null || true

memory_case
echo "load_peak_rss,$load_hwm" >>"$memory"

# The load of the cases above, before the peer block adds its own.
main_loadavg="$(cut -d' ' -f1-3 /proc/loadavg)"
# The peer block: its own processes on base+92..94, the same cluster.
"$here/peer.sh"
# The migration block: its own processes on base+95..97, the same cluster.
"$here/migration.sh"

# ---------------------------------------------------------------------------
# The machine, for the report.
cpu="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
redis_version="$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
cat >"$work/meta.env" <<EOF
date=$(date -u '+%Y-%m-%d %H:%M UTC')
nproc=$(nproc)
cpu=$cpu
mem=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
kernel=$(uname -r)
redis=$redis_version
rustc=$(rustc --version)
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo ' (modified)')
loadavg=$main_loadavg
clients=$c
requests=$n1
requests_pipelined=$np
latency_requests=$nlat
keyspace=$keyspace
rounds=$rounds
runs=$total_runs
load_seconds=$load_seconds
idle_clients=$idle_clients
base=$base
proxy_port=$proxy_port
owner=$owner
EOF

python3 "$here/report.py" --results "$results" --memory "$memory" --meta "$work/meta.env" \
    --markdown docs/benchmarks.md --chart docs/bench-throughput.png \
    --peer-results "$peer_results" --peer-meta "$work/peer-meta.env"
