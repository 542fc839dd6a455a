#!/usr/bin/env bash
# The migration block of `make bench` (issue 22): the live migration's copy
# rate while slotproxy serves redis-benchmark load, and that load's
# throughput during the copy as a ratio to the same load without it.
# bench.sh runs it after the peer block (or alone, with BENCH_ONLY=migration)
# on the local cluster it started.
#
#   deploy/bench/migration.sh   # the cluster on $SLOTPROXY_BENCH_BASE_PORT is up
#
# A standalone redis-server (base+95) is seeded with
# $BENCH_MIGRATION_KEYS keys of $BENCH_MIGRATION_VALUE bytes; slotproxy
# (base+96, admin base+97) starts with [migration] phase "source". The
# load is redis-benchmark SET and GET (-c $BENCH_MIGRATION_CLIENTS,
# -r $BENCH_MIGRATION_KEYSPACE, $BENCH_MIGRATION_REQUESTS requests a run):
#   source  runs in phase source (slotproxy in front of the standalone);
#   during  runs back to back from the reload to "copy" until the copy is
#           done (the copier at copy_rate = $BENCH_MIGRATION_RATE, 0: none);
#   after   runs in phase copy once the copy is done (the writes are still
#           mirrored: what remains is the copier's cost).
# Output: docs/bench-migration.csv (one row per run) and a summary on
# stderr: keys/s and MB/s of the copy, the load's throughput during the
# copy over after it and over phase source.
#
# Environment (defaults in brackets):
#   BENCH_MIGRATION_KEYS       keys at the source [200000]
#   BENCH_MIGRATION_VALUE      value bytes [100]
#   BENCH_MIGRATION_RATE       migration.copy_rate [0]
#   BENCH_MIGRATION_CLIENTS    redis-benchmark -c [50]
#   BENCH_MIGRATION_KEYSPACE   redis-benchmark -r [100000]
#   BENCH_MIGRATION_REQUESTS   requests per run [50000]
#   BENCH_MIGRATION_BIN        slotproxy binary [target/release/slotproxy,
#                              built here]
#   BENCH_MIGRATION_RESULTS    CSV file [docs/bench-migration.csv]
#   SLOTPROXY_BENCH_BASE_PORT  cluster ports base..base+5 [7100]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/bench/lib.sh
. "$here/lib.sh"
root="$(cd "$here/../.." && pwd)"
cd "$root"

keys="${BENCH_MIGRATION_KEYS:-200000}"
value="${BENCH_MIGRATION_VALUE:-100}"
rate="${BENCH_MIGRATION_RATE:-0}"
c="${BENCH_MIGRATION_CLIENTS:-50}"
keyspace="${BENCH_MIGRATION_KEYSPACE:-100000}"
n="${BENCH_MIGRATION_REQUESTS:-50000}"
results="${BENCH_MIGRATION_RESULTS:-docs/bench-migration.csv}"
base="${SLOTPROXY_BENCH_BASE_PORT:-7100}"
src_port=$((base + 95))
proxy_port=$((base + 96))
admin_port=$((base + 97))
work="$root/target/bench/migration"

redis-cli -p "$base" cluster info 2>/dev/null | grep -q cluster_state:ok ||
    { echo "migration: no healthy cluster on port $base" >&2; exit 1; }
for p in "$src_port" "$proxy_port" "$admin_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "migration: port $p is in use; set SLOTPROXY_BENCH_BASE_PORT" >&2
        exit 1
    fi
done
bin="${BENCH_MIGRATION_BIN:-}"
if [ -z "$bin" ]; then
    echo "migration: building slotproxy" >&2
    cargo build --release --quiet --bin slotproxy
    bin=target/release/slotproxy
fi
rm -rf "$work"
mkdir -p "$work/source" "$(dirname "$results")"

src_pid="" proxy_pid=""
cleanup() {
    [ -n "$proxy_pid" ] && stop_process "$proxy_pid"
    [ -n "$src_pid" ] && stop_process "$src_pid"
    return 0
}
trap cleanup EXIT

redis-server --port "$src_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work/source" --logfile "$work/source/redis.log" &
src_pid=$!
until redis-cli -p "$src_port" ping >/dev/null 2>&1; do sleep 0.1; done
echo "migration: seeding $keys keys of $value bytes" >&2
python3 - "$keys" "$value" <<'EOF' | redis-cli -p "$src_port" --pipe >/dev/null
import sys
keys, size = int(sys.argv[1]), int(sys.argv[2])
v = "x" * size
out = sys.stdout
for i in range(keys):
    k = f"mig:{i}"
    out.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${size}\r\n{v}\r\n")
EOF

config() {
    cat >"$work/slotproxy.toml" <<EOF
[frontend]
listen = "127.0.0.1:$proxy_port"

[admin]
listen = "127.0.0.1:$admin_port"

[cluster]
seeds = ["127.0.0.1:$base"]

[log]
level = "warn"

[migration]
source = "127.0.0.1:$src_port"
phase = "$1"
copy_rate = $rate
EOF
}
config source
"$bin" --config "$work/slotproxy.toml" 2>"$work/slotproxy.log" &
proxy_pid=$!
until redis-cli -p "$proxy_port" ping >/dev/null 2>&1; do sleep 0.1; done

status() { "$bin" migrate status --json --admin "127.0.0.1:$admin_port"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

echo "phase,run,command,rps" >"$results"
# One redis-benchmark run of SET and GET; appends its rows; prints the mean rps.
load() {
    redis-benchmark -p "$proxy_port" -c "$c" -n "$n" -r "$keyspace" -t set,get --csv -q 2>/dev/null |
        python3 -c '
import csv, sys
phase, run, path = sys.argv[1:4]
rows = [r for r in csv.reader(sys.stdin) if r and r[0] in ("SET", "GET")]
with open(path, "a") as f:
    for r in rows:
        f.write(f"{phase},{run},{r[0]},{r[1]}\n")
print(sum(float(r[1]) for r in rows) / max(len(rows), 1))
' "$1" "$2" "$results"
}

mean() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(sum(v)/len(v))" "$@"; }

before=()
for r in 1 2 3; do before+=("$(load source "$r")"); done

config copy
redis-cli -p "$proxy_port" proxy config reload >/dev/null
during=()
r=0
while [ "$(status | field 'd["copier"]["state"]')" != "done" ]; do
    r=$((r + 1))
    during+=("$(load during "$r")")
done
s="$(status)"
copied="$(field 'd["keys_copied"]' <<<"$s")"
bytes="$(field 'd["bytes"]' <<<"$s")"
took="$(field 'd["copier"]["took_secs"]' <<<"$s")"
after=()
for r in 1 2 3; do after+=("$(load after "$r")"); done

[ "${#during[@]}" -gt 0 ] || during=("nan")
python3 - "$copied" "$bytes" "$took" "$(mean "${before[@]}")" "$(mean "${during[@]}")" "$(mean "${after[@]}")" "${#during[@]}" <<'EOF' >&2
import sys
copied, byts, took = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
source, during, after, runs = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
print(f"migration: copied {copied} keys, {byts/1e6:.1f} MB in {took:.1f} s: "
      f"{copied/took:.0f} keys/s, {byts/took/1e6:.2f} MB/s")
print(f"migration: load (SET+GET mean rps) phase source {source:.0f}, during the copy {during:.0f} "
      f"({runs} runs), after it {after:.0f}: during/after {during/after:.2f}, during/source {during/source:.2f}")
EOF
{
    echo "copy,keys,$copied"
    echo "copy,bytes,$bytes"
    echo "copy,seconds,$took"
} >>"$results"
