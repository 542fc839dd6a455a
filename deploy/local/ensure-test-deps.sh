#!/usr/bin/env bash
# What `make test` needs besides Rust: redis-server and redis-tools (apt), and
# redis-py for the cluster-aware client test (PyPI). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/ensure-redis.sh"
if ! python3 -c 'import redis, sys; sys.exit(0 if int(redis.__version__.split(".")[0]) >= 5 else 1)' 2>/dev/null; then
    echo "ensure-test-deps: installing redis-py" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'redis>=5' 2>&1 | grep -v 'Running pip as the' >&2 || true
    python3 -c 'import redis' || { echo "ensure-test-deps: redis-py did not install" >&2; exit 1; }
fi
