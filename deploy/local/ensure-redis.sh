#!/usr/bin/env bash
# Makes sure the distribution's redis-server, redis-cli and redis-benchmark are
# installed (apt-get on Debian/Ubuntu). Idempotent. Used by `make run`,
# `make test` and CI.
set -euo pipefail

missing=()
for bin in redis-server redis-cli redis-benchmark; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "ensure-redis: installing redis-server and redis-tools (missing: ${missing[*]})" >&2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "ensure-redis: apt-get not found; install redis-server 7 yourself" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "ensure-redis: need root or sudo" >&2; exit 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null
    # The package may start a service on 6379; nothing here uses it. Try
    # both systemd and the init script (containers often have no systemd).
    if command -v systemctl >/dev/null 2>&1; then
        $sudo systemctl stop redis-server >/dev/null 2>&1 || true
        $sudo systemctl disable redis-server >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        $sudo service redis-server stop >/dev/null 2>&1 || true
    fi
fi

redis-server --version >&2
