#!/usr/bin/env bash
# A local Redis Cluster for `make run`: 6 nodes (3 masters + 3 replicas) on
# 127.0.0.1, ports $SLOTPROXY_CLUSTER_BASE_PORT..+5 (default 7000-7005), cluster
# bus on port+10000, data in .local/cluster/<port>/ under the repository.
#
#   deploy/local/cluster.sh start    # idempotent
#   deploy/local/cluster.sh status
#   deploy/local/cluster.sh stop     # shuts the nodes down, removes the data
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
base="${SLOTPROXY_CLUSTER_BASE_PORT:-7000}"
data="$root/.local/cluster"
ports=()
for i in 0 1 2 3 4 5; do ports+=("$((base + i))"); done

running() { redis-cli -p "$1" ping >/dev/null 2>&1; }

healthy() {
    local p info
    for p in "${ports[@]}"; do
        # Captured first: `redis-cli | grep -q` can die of SIGPIPE under pipefail.
        info="$(redis-cli -p "$p" cluster info 2>/dev/null)" || return 1
        [[ "$info" == *"cluster_state:ok"* ]] || return 1
    done
}

# Our node on port $1, by its pidfile.
ours() {
    local pidfile="$data/$1/redis.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# Shuts down the nodes on our ports ($1 = "all": also ones without our
# pidfile) and removes their data directories.
stop() {
    local p pidfile alive
    for p in "${ports[@]}"; do
        if [ "${1:-}" = all ] || ours "$p"; then
            redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
        fi
    done
    for _ in $(seq 1 50); do
        alive=0
        for p in "${ports[@]}"; do ours "$p" && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${ports[@]}"; do
        pidfile="$data/$p/redis.pid"
        # Still alive after SHUTDOWN: kill it (if the pid is still a redis-server).
        if ours "$p" && ps -p "$(cat "$pidfile")" -o args= 2>/dev/null | grep -q '^redis-server'; then
            kill -9 "$(cat "$pidfile")" >/dev/null 2>&1 || true
        fi
        rm -rf "${data:?}/$p"
    done
    rm -f "$data/create-$base.log"
    # Last cluster gone (no node directories left): remove .local/cluster.
    if [ -d "$data" ] && [ -z "$(find "$data" -mindepth 1 -maxdepth 1 -type d)" ]; then
        rm -rf "$data"
    fi
}

start() {
    "$here/ensure-redis.sh"
    if healthy; then
        echo "cluster already running on 127.0.0.1:${ports[0]}-${ports[5]} (cluster_state:ok)"
        return
    fi
    # Leftovers of an earlier run of ours (crashed, or unhealthy).
    stop
    for p in "${ports[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then
            echo "port $p or $((p + 10000)) is in use; set SLOTPROXY_CLUSTER_BASE_PORT" >&2
            exit 1
        fi
    done
    for p in "${ports[@]}"; do
        mkdir -p "$data/$p"
        redis-server --port "$p" --cluster-port "$((p + 10000))" --bind 127.0.0.1 \
            --protected-mode no --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 5000 --appendonly no --save '' --daemonize yes \
            --repl-diskless-sync-delay 0 --repl-ping-replica-period 1 \
            --dir "$data/$p" --pidfile "$data/$p/redis.pid" --logfile "$data/$p/redis.log"
    done
    for p in "${ports[@]}"; do
        for _ in $(seq 1 100); do running "$p" && break; sleep 0.05; done
        running "$p" || { echo "node $p did not start; see $data/$p/redis.log" >&2; exit 1; }
    done
    addrs=()
    for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
    log="$data/create-$base.log"
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$log" 2>&1 \
        || { cat "$log" >&2; exit 1; }
    deadline=$((SECONDS + 30))
    until healthy; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "cluster did not reach cluster_state:ok in 30 s; logs in $data/<port>/redis.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "cluster running on 127.0.0.1:${ports[0]}-${ports[5]} (3 masters, 3 replicas)"
}

status() {
    for p in "${ports[@]}"; do
        if running "$p"; then
            role="$(redis-cli -p "$p" role)"
            role="${role%%$'\n'*}"
            state="$(redis-cli -p "$p" cluster info | tr -d '\r')"
            state="$(grep '^cluster_state' <<<"$state" || echo cluster_state:unknown)"
            echo "127.0.0.1:$p $role $state"
        else
            echo "127.0.0.1:$p down"
        fi
    done
    healthy
}

case "${1:-}" in
    start) start ;;
    stop) stop all; echo "cluster on 127.0.0.1:${ports[0]}-${ports[5]} stopped" ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
