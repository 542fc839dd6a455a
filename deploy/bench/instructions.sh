#!/usr/bin/env bash
# User-space instructions per request of one or more slotproxy builds, counted
# by valgrind's callgrind: the same figure for the same binary and input
# whatever else the machine is doing, where CPU time on two shared cores
# moves by 10-30 % between rounds. Use it to A/B a change to the per-request
# path; confirm with deploy/bench/ab.sh, since it counts no kernel time and
# the proxy runs some 50x slower under valgrind (so with 50 clients more
# requests share a wake-up than in a real run; the one-client case is exact).
#
#   deploy/bench/instructions.sh BINARY [BINARY ...]
#
# A 6-node cluster starts on $INSTR_BASE_PORT..+5 [7600]; each binary runs in
# turn under callgrind on $INSTR_BASE_PORT+90 with slow-log recording off (so
# valgrind's slowness does not make every request "slow"). After a warm-up,
# for each case the counters are zeroed, redis-benchmark runs, and the
# counters are dumped: instructions / requests.
#
# Cases (name: redis-benchmark arguments, -r 100000):
#   get1c1   -c 1  -P 1  GET, 3000 requests (one client: no batching at all)
#   get1     -c 50 -P 1  GET, 20000
#   set1     -c 50 -P 1  SET, 20000
#   get16    -c 50 -P 16 GET, 100000
#   set16    -c 50 -P 16 SET, 100000
#   mset10   -c 50 -P 1  10-key cross-slot MSET, 5000
# INSTR_CASES selects and orders them [all of the above].
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

[ "$#" -ge 1 ] || { echo "usage: $0 BINARY [BINARY ...]" >&2; exit 2; }
bins=()
for b in "$@"; do
    [ -x "$b" ] || { echo "instructions: $b is not an executable file" >&2; exit 2; }
    bins+=("$(realpath "$b")")
done
command -v valgrind >/dev/null || { echo "instructions: valgrind is not installed" >&2; exit 2; }
cd "$root"

base="${INSTR_BASE_PORT:-7600}"
port=$((base + 90))
cases="${INSTR_CASES:-get1c1 get1 set1 get16 set16 mset10}"
work="$(mktemp -d /tmp/slotproxy-instr.XXXXXX)"
pid=""
cleanup() {
    [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    SLOTPROXY_CLUSTER_BASE_PORT="$base" deploy/local/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

args_of() { # CASE: sets $n and $args
    args=(-p "$port" -r 100000)
    case "$1" in
        get1c1) n=3000; args+=(-c 1 -P 1 -t get) ;;
        get1) n=20000; args+=(-c 50 -P 1 -t get) ;;
        set1) n=20000; args+=(-c 50 -P 1 -t set) ;;
        get16) n=100000; args+=(-c 50 -P 16 -t get) ;;
        set16) n=100000; args+=(-c 50 -P 16 -t set) ;;
        mset10)
            n=5000; args+=(-c 50 -P 1 MSET)
            for i in $(seq 1 10); do args+=("k$i:__rand_int__" v); done
            ;;
        *) echo "instructions: unknown case $1" >&2; exit 2 ;;
    esac
    args+=(-n "$n")
}

SLOTPROXY_CLUSTER_BASE_PORT="$base" deploy/local/cluster.sh start >&2
cat >"$work/proxy.toml" <<EOF
[frontend]
listen = "127.0.0.1:$port"
slowlog_threshold = "1h"

[cluster]
seeds = ["127.0.0.1:$base"]

[log]
level = "warn"
EOF

echo "build,case,requests,instructions,per_request" >"$work/results.csv"
for i in "${!bins[@]}"; do
    bin="${bins[$i]}"
    valgrind --tool=callgrind --compress-strings=no --compress-pos=no \
        --callgrind-out-file="$work/cg.$i" "$bin" --config "$work/proxy.toml" \
        2>"$work/valgrind.$i.log" &
    pid=$!
    for _ in $(seq 1 300); do
        [ "$(redis-cli -p "$port" set instr:ready 1 2>/dev/null)" = OK ] && break
        sleep 0.2
    done
    redis-benchmark -p "$port" -c 10 -n 3000 -r 100000 -t set,get -q >/dev/null
    for case in $cases; do
        args_of "$case"
        callgrind_control -z "$pid" >/dev/null
        redis-benchmark "${args[@]}" -q >/dev/null 2>&1
        callgrind_control -d "$case" "$pid" >/dev/null
        f="$(ls -t "$work/cg.$i".* | head -1)"
        ir="$(awk '/^summary:/ { print $2; exit }' "$f")"
        echo "$i,$case,$n,$ir,$((ir / n))" >>"$work/results.csv"
        echo "instructions: build $i ($bin) $case: $((ir / n)) per request" >&2
        rm -f "$f"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done

python3 - "$work/results.csv" "${bins[@]}" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
bins = sys.argv[2:]
for i, b in enumerate(bins):
    print(f"build {i}: `{b}`  ")
print()
head = " | ".join(f"build {i}" for i in range(len(bins)))
ratios = " | ".join(f"{i}/0" for i in range(1, len(bins)))
print(f"| case | {head} |" + (f" {ratios} |" if ratios else ""))
print("|---|" + "---:|" * (2 * len(bins) - 1))
for case in dict.fromkeys(r["case"] for r in rows):
    per = {int(r["build"]): int(r["per_request"]) for r in rows if r["case"] == case}
    cells = " | ".join(f"{per[i]:,}" for i in range(len(bins)))
    rs = " | ".join(f"{per[i] / per[0]:.3f}" for i in range(1, len(bins)))
    print(f"| {case} | {cells} |" + (f" {rs} |" if rs else ""))
EOF
