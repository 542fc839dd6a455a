#!/usr/bin/env bash
# `make run`: a local 6-node cluster, then slotproxy in front of it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
"$here/ensure-redis.sh"
"$here/cluster.sh" start
cargo build --release
base="${SLOTPROXY_CLUSTER_BASE_PORT:-7000}"
config=config/local.toml
if [ "$base" != 7000 ]; then
    # config/local.toml names 7000-7002; point the seeds at the moved cluster.
    config=".local/local-$base.toml"
    sed "s/^seeds = .*/seeds = [\"127.0.0.1:$base\", \"127.0.0.1:$((base + 1))\", \"127.0.0.1:$((base + 2))\"]/" \
        config/local.toml >"$config"
fi
cat <<MSG

  +-------------------------------------------------------------------+
  |  slotproxy is starting on 127.0.0.1:6380                          |
  |  (Redis Cluster: 127.0.0.1:$base-$((base + 5)), 3 masters + 3 replicas)     |
  |                                                                   |
  |  Connect:   redis-cli -p 6380                                     |
  |  Try:       redis-cli -p 6380 set foo bar                         |
  |             redis-cli -p 6380 get foo                             |
  |                                                                   |
  |  Ctrl-C stops the proxy; the cluster keeps running.               |
  |  \`make stop\` shuts the cluster down and removes its data.         |
  +-------------------------------------------------------------------+

MSG
exec target/release/slotproxy --config "$config"
