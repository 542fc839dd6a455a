#!/usr/bin/env bash
# A local Redis Cluster for `make run`: 6 nodes (3 masters + 3 replicas) on
# 127.0.0.1, ports $SLOTPROXY_CLUSTER_BASE_PORT..+5 (default 7000-7005), cluster
# bus on port+10000, data in .local/cluster/ under the repository.
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
    for p in "${ports[@]}"; do
        running "$p" || return 1
        redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    done
}

stop() {
    for p in "${ports[@]}"; do
        redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
        pidfile="$data/$p/redis.pid"
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" >/dev/null 2>&1 || true
        fi
    done
    for _ in $(seq 1 50); do
        alive=0
        for p in "${ports[@]}"; do running "$p" && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    rm -rf "$data"
}

start() {
    "$here/ensure-redis.sh"
    if healthy; then
        echo "cluster already running on 127.0.0.1:${ports[0]}-${ports[5]} (cluster_state:ok)"
        return
    fi
    stop
    for p in "${ports[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then
            echo "port $p or $((p + 10000)) is in use; set SLOTPROXY_CLUSTER_BASE_PORT" >&2
            exit 1
        fi
        mkdir -p "$data/$p"
        redis-server --port "$p" --cluster-port "$((p + 10000))" --bind 127.0.0.1 \
            --protected-mode no --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 5000 --appendonly no --save '' --daemonize yes \
            --dir "$data/$p" --pidfile "$data/$p/redis.pid" --logfile "$data/$p/redis.log"
    done
    for p in "${ports[@]}"; do
        for _ in $(seq 1 100); do running "$p" && break; sleep 0.05; done
        running "$p" || { echo "node $p did not start; see $data/$p/redis.log" >&2; exit 1; }
    done
    addrs=()
    for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$data/create.log" 2>&1 \
        || { cat "$data/create.log" >&2; exit 1; }
    for _ in $(seq 1 300); do
        healthy && break
        sleep 0.1
    done
    healthy || { echo "cluster did not reach cluster_state:ok in 30 s" >&2; exit 1; }
    echo "cluster running on 127.0.0.1:${ports[0]}-${ports[5]} (3 masters, 3 replicas)"
}

status() {
    for p in "${ports[@]}"; do
        if running "$p"; then
            role="$(redis-cli -p "$p" role | head -1)"
            state="$(redis-cli -p "$p" cluster info | grep '^cluster_state' | tr -d '\r')"
            echo "127.0.0.1:$p $role $state"
        else
            echo "127.0.0.1:$p down"
        fi
    done
    healthy
}

case "${1:-}" in
    start) start ;;
    stop) stop; echo "cluster stopped" ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
