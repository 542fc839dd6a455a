#!/usr/bin/env bash
# What `make bench` needs besides redis-benchmark (deploy/local/ensure-redis.sh):
# python3 with matplotlib for the chart (PyPI). Idempotent.
set -euo pipefail
command -v python3 >/dev/null 2>&1 || { echo "ensure-bench-deps: python3 is required" >&2; exit 1; }
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    echo "ensure-bench-deps: installing matplotlib" >&2
    python3 -m pip install --quiet --disable-pip-version-check matplotlib 2>&1 | grep -v 'Running pip as the' >&2 || true
    python3 -c 'import matplotlib' || { echo "ensure-bench-deps: matplotlib did not install" >&2; exit 1; }
fi
