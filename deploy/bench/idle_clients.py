#!/usr/bin/env python3
"""Resident memory of slotproxy per idle client connection.

Reads the proxy's VmRSS (/proc/PID/status) before and after opening COUNT
real TCP connections that stay open, then after one PING on each (the
session's buffers are set up by its first request), again once those
sessions are idle for 2.5 s (they give their buffers back after 1 s), then
after closing them all. Prints one `name value` line per figure (bytes, or a count).

    idle_clients.py --port 7191 --pid 1234 --count 10000

The caller raises `ulimit -n` above COUNT for itself and for the proxy, whose
frontend.max_clients must exceed COUNT (one control connection is used too).
Standard library only.
"""

import argparse
import socket
import sys
import time

PING = b"*1\r\n$4\r\nPING\r\n"


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settled_rss(pid, wait=0.5, tries=20):
    """VmRSS once two readings `wait` apart agree within 64 KiB."""
    last = rss(pid)
    for _ in range(tries):
        time.sleep(wait)
        now = rss(pid)
        if abs(now - last) <= 65536:
            return now
        last = now
    return last


def command(sock, *args):
    """Sends one command on `sock`, returns the raw reply (one read)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return sock.recv(65536)


def connected_clients(ctl):
    info = command(ctl, "INFO", "clients").decode(errors="replace")
    for line in info.split("\r\n"):
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1])
    raise RuntimeError("INFO clients has no connected_clients: %r" % info[:200])


def wait_clients(ctl, want, timeout=60):
    deadline = time.time() + timeout
    while True:
        n = connected_clients(ctl)
        if n == want:
            return
        if time.time() > deadline:
            raise RuntimeError(f"proxy reports {n} clients, expected {want}")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the proxy's pid")
    ap.add_argument("--count", type=int, default=10000)
    a = ap.parse_args()

    ctl = socket.create_connection((a.host, a.port), timeout=10)
    # A routed command, so backend connections exist before the baseline.
    command(ctl, "SET", "bench:idle", "1")
    wait_clients(ctl, 1)
    before = settled_rss(a.pid)

    socks = []
    t0 = time.time()
    for _ in range(a.count):
        s = socket.create_connection((a.host, a.port), timeout=30)
        socks.append(s)
    wait_clients(ctl, a.count + 1)
    connect_s = time.time() - t0
    idle = settled_rss(a.pid)

    for s in socks:
        s.sendall(PING)
    for s in socks:
        got = b""
        while len(got) < 7:
            chunk = s.recv(64)
            if not chunk:
                raise RuntimeError("connection closed before PONG")
            got += chunk
        if got != b"+PONG\r\n":
            raise RuntimeError(f"unexpected reply {got!r}")
    pinged = settled_rss(a.pid)
    # Idle again: sessions give back their active phase after 1 s.
    time.sleep(2.5)
    idle_again = settled_rss(a.pid)

    for s in socks:
        s.close()
    wait_clients(ctl, 1)
    closed = settled_rss(a.pid)
    ctl.close()

    n = a.count
    print(f"clients {n}")
    print(f"connect_seconds {connect_s:.2f}")
    print(f"rss_before {before}")
    print(f"rss_idle {idle}")
    print(f"rss_after_ping {pinged}")
    print(f"rss_after_close {closed}")
    print(f"per_idle_connection {(idle - before) / n:.0f}")
    print(f"rss_idle_after_ping {idle_again}")
    print(f"per_connection_after_ping {(pinged - before) / n:.0f}")
    print(f"per_idle_connection_after_ping {(idle_again - before) / n:.0f}")
    print(f"retained_per_connection_after_close {(closed - before) / n:.0f}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - one line for the shell script
        print(f"idle_clients: {e}", file=sys.stderr)
        sys.exit(1)
