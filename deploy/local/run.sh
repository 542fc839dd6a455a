#!/usr/bin/env bash
# `make run`: a local 6-node cluster, then slotproxy in front of it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
"$here/cluster.sh" start
cargo build --release
cat <<'MSG'

  slotproxy is starting on 127.0.0.1:6380, in front of the cluster on 7000-7005.
  Connect with:     redis-cli -p 6380
  Try:              redis-cli -p 6380 set foo bar && redis-cli -p 6380 get foo
  Stop the proxy with Ctrl-C; `make stop` shuts the cluster down.

MSG
exec target/release/slotproxy --config config/local.toml
