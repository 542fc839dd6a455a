#!/usr/bin/env bash
# A/B comparison of two slotproxy binaries: proxy CPU time per request and
# throughput, on a local 6-node cluster (deploy/local/cluster.sh).
#
#   deploy/bench/ab.sh A_BINARY B_BINARY
#
# e.g. A = a release build of an older commit (git worktree add /tmp/old REV;
# CARGO_TARGET_DIR=/tmp/old-target cargo build --release), B = the current one.
#
# The cluster starts once. Each round runs every case on both builds, A first
# in odd rounds and B first in even rounds (so drift and warm-up effects fall on
# both sides alike). Every (case, build) run gets a fresh proxy (minimal
# config: frontend.listen, cluster.seeds, log level warn); once it answers
# SET, the proxy's utime+stime (/proc/PID/stat, all threads) is read before
# and after one redis-benchmark run, and the proxy is stopped.
#
# Cases (-c $AB_CLIENTS, -r 100000):
#   set1 / get1    -t set / -t get, -P 1,  AB_REQUESTS requests
#   set16 / get16  -t set / -t get, -P 16, 5 x AB_REQUESTS requests
#   mset10         MSET of 10 keys on different slots (k1:__rand_int__ v ...
#                  k10:__rand_int__ v), -P 1, AB_REQUESTS requests; one
#                  request = one MSET (the proxy splits it across masters)
#
# Output: one CSV row per run (round,order,case,build,requests,rps,
# cpu_us_per_request) in $AB_RESULTS, and a markdown table per case (medians
# of A and B with min-max, B/A ratio of medians) on stdout and in
# ${AB_RESULTS%.csv}.md. Progress (with the 1-minute load average) goes to
# stderr. CPU time is counted in clock ticks (getconf CLK_TCK, usually 10 ms):
# keep runs long enough for a few hundred ticks.
#
# Environment (defaults in brackets):
#   AB_ROUNDS      rounds; even counts give both orders equally often [4]
#   AB_REQUESTS    requests per run at -P 1; -P 16 cases run 5x [100000]
#   AB_CLIENTS     redis-benchmark -c [50]
#   AB_BASE_PORT   cluster ports base..base+5; proxy A on base+90, B on
#                  base+91 [7300]
#   AB_CASES       cases to run, in order [set1 get1 set16 get16 mset10]
#   AB_WARMUP      requests of one unrecorded set1 run per build before
#                  round 1 (0: none) [20000]
#   AB_RESULTS     CSV file [target/ab/results.csv]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/bench/lib.sh
. "$here/lib.sh"
root="$(cd "$here/../.." && pwd)"

usage() {
    echo "usage: $0 A_BINARY B_BINARY" >&2
    exit 2
}
[ "$#" -eq 2 ] || usage
bin_a="$(realpath "$1")"
bin_b="$(realpath "$2")"
for b in "$bin_a" "$bin_b"; do
    [ -x "$b" ] || { echo "ab: $b is not an executable file" >&2; exit 2; }
done
cd "$root"

rounds="${AB_ROUNDS:-4}"
n1="${AB_REQUESTS:-100000}"
c="${AB_CLIENTS:-50}"
base="${AB_BASE_PORT:-7300}"
cases="${AB_CASES:-set1 get1 set16 get16 mset10}"
warmup="${AB_WARMUP:-20000}"
results="${AB_RESULTS:-target/ab/results.csv}"
summary="${results%.csv}.md"
keyspace=100000
port_a=$((base + 90))
port_b=$((base + 91))
hz="$(getconf CLK_TCK)"

for case in $cases; do
    case "$case" in
        set1 | get1 | set16 | get16 | mset10) ;;
        *) echo "ab: unknown case $case (set1 get1 set16 get16 mset10)" >&2; exit 2 ;;
    esac
done
for p in "$port_a" "$port_b"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "ab: port $p is in use; set AB_BASE_PORT" >&2
        exit 1
    fi
done

mkdir -p "$(dirname "$results")"
work="$(mktemp -d /tmp/slotproxy-ab.XXXXXX)"

proxy_pid=""
cleanup() {
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    SLOTPROXY_CLUSTER_BASE_PORT="$base" deploy/local/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SLOTPROXY_CLUSTER_BASE_PORT="$base" deploy/local/cluster.sh start >&2

# One config per build: they differ in the listen port only.
for build in A B; do
    port=$port_a
    [ "$build" = B ] && port=$port_b
    cat >"$work/$build.toml" <<EOF
[frontend]
listen = "127.0.0.1:$port"

[cluster]
seeds = ["127.0.0.1:$base"]

[log]
level = "warn"
EOF
done

# start_proxy BUILD: runs that build's proxy, sets $proxy_pid and $port once
# it answers SET through the cluster.
start_proxy() {
    local bin=$bin_a
    port=$port_a
    if [ "$1" = B ]; then bin=$bin_b; port=$port_b; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "ab: port $port is in use before proxy $1 starts" >&2
        exit 1
    fi
    "$bin" --config "$work/$1.toml" 2>>"$work/proxy-$1.log" &
    proxy_pid=$!
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p "$port" set ab:ready 1 2>/dev/null)" = OK ] && return
        kill -0 "$proxy_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "ab: proxy $1 ($bin) did not come up on port $port; its log:" >&2
    cat "$work/proxy-$1.log" >&2
    exit 1
}

stop_proxy() {
    stop_process "$proxy_pid"
    proxy_pid=""
}

# bench_args CASE PORT N: the redis-benchmark arguments of a case.
bench_args() {
    local case="$1" port="$2" n="$3" i
    args=(-p "$port" -c "$c" -n "$n" -r "$keyspace")
    case "$case" in
        set1) args+=(-P 1 -t set) ;;
        get1) args+=(-P 1 -t get) ;;
        set16) args+=(-P 16 -t set) ;;
        get16) args+=(-P 16 -t get) ;;
        mset10)
            args+=(-P 1 MSET)
            for i in $(seq 1 10); do args+=("k$i:__rand_int__" v); done
            ;;
    esac
}

requests_for() { # CASE
    case "$1" in
        *16) echo $((n1 * 5)) ;;
        *) echo "$n1" ;;
    esac
}

# run ROUND ORDER CASE BUILD [record]: one fresh proxy, one benchmark run.
run() {
    local round="$1" order="$2" case="$3" build="$4" record="${5:-record}"
    local n before after line rps us
    n=$(requests_for "$case")
    [ "$record" = record ] || n=$warmup
    start_proxy "$build"
    bench_args "$case" "$port" "$n"
    read -r before _ <<<"$(cpu_ticks "$proxy_pid")"
    line=$(redis-benchmark --csv "${args[@]}" 2>"$work/bench.err" | awk '/^"test"/ { getline; print }') || true
    kill -0 "$proxy_pid" 2>/dev/null || { echo "ab: proxy $build died during $case" >&2; exit 1; }
    read -r after _ <<<"$(cpu_ticks "$proxy_pid")"
    stop_proxy
    if [ -z "$line" ]; then
        echo "ab: redis-benchmark ${args[*]} printed no result:" >&2
        cat "$work/bench.err" >&2
        exit 1
    fi
    # "NAME","rps","avg_latency_ms",...
    IFS=, read -r _ rps _ <<<"$line"
    rps=${rps//\"/}
    us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$n" 'BEGIN { printf "%.3f", t * 1000000 / hz / n }')
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$record" = record ]; then
        echo "$round,$order,$case,$build,$n,$rps,$us" >>"$results"
        printf 'ab: round %s %s %-6s %s %10s req/s %8s cpu us/req  (%s ticks, load %s)\n' \
            "$round" "$order" "$case" "$build" "$rps" "$us" $((after - before)) "$load" >&2
    else
        printf 'ab: warm-up %s: %s req/s, %s cpu us/req (load %s)\n' "$build" "$rps" "$us" "$load" >&2
    fi
}

echo "ab: A = $bin_a" >&2
echo "ab: B = $bin_b" >&2
echo "ab: rounds=$rounds requests=$n1 (x5 at -P 16) clients=$c cases='$cases' CLK_TCK=$hz" >&2
echo "ab: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
started=$SECONDS

if [ "$warmup" -gt 0 ]; then
    run 0 - set1 A warmup
    run 0 - set1 B warmup
fi

echo "round,order,case,build,requests,rps,cpu_us_per_request" >"$results"
for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) = 1 ]; then order=AB; else order=BA; fi
    for case in $cases; do
        run "$round" "$order" "$case" "${order:0:1}"
        run "$round" "$order" "$case" "${order:1:1}"
    done
done

echo "ab: load average at end: $(cut -d' ' -f1-3 /proc/loadavg); $((SECONDS - started)) s" >&2

python3 - "$results" "$bin_a" "$bin_b" "$cases" >"$summary" <<'EOF'
import csv, statistics, sys

path, bin_a, bin_b, cases = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
rows = list(csv.DictReader(open(path)))
what = {
    "set1": "SET, -P 1", "get1": "GET, -P 1", "set16": "SET, -P 16",
    "get16": "GET, -P 16", "mset10": "10-key cross-slot MSET, -P 1",
}

def stats(case, build, key):
    v = [float(r[key]) for r in rows if r["case"] == case and r["build"] == build]
    return statistics.median(v), min(v), max(v), len(v)

def fmt(x, digits):
    return f"{x:,.{digits}f}"

print(f"A = `{bin_a}`  ")
print(f"B = `{bin_b}`")
for case in cases:
    n = next(r["requests"] for r in rows if r["case"] == case)
    runs = stats(case, "A", "rps")[3]
    print()
    print(f"### {case} ({what[case]}, {int(n):,} requests, {runs} runs per build)")
    print()
    print("| metric | A median (min–max) | B median (min–max) | B/A |")
    print("|---|---:|---:|---:|")
    for key, label, digits in (("cpu_us_per_request", "proxy CPU µs/request", 2),
                               ("rps", "requests/s", 0)):
        a, b = stats(case, "A", key), stats(case, "B", key)
        cell = lambda s: f"{fmt(s[0], digits)} ({fmt(s[1], digits)}–{fmt(s[2], digits)})"
        print(f"| {label} | {cell(a)} | {cell(b)} | {b[0] / a[0]:.3f} |")
EOF
cat "$summary"
echo "ab: results in $results, table in $summary" >&2
