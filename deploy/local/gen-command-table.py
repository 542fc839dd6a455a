#!/usr/bin/env python3
"""Regenerates src/command/redis-<version>.resp, the checked-in command table.

Starts the distribution's redis-server (cluster mode, a free loopback port, a
temporary directory), sends COMMAND, and writes the raw RESP reply unchanged.
slotproxy parses this file at start-up with the same code that parses the
live cluster's COMMAND reply at run time.

Usage: deploy/local/gen-command-table.py [OUTPUT_DIR]   (default: src/command)
"""
import os
import socket
import subprocess
import sys
import tempfile
import time


def read_frame(sock):
    """Reads one complete RESP frame (any nesting) and returns its raw bytes."""
    buf = bytearray()
    pos = 0

    def fill():
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed")
        buf.extend(chunk)

    stack = [1]
    while stack:
        while b"\r\n" not in buf[pos:]:
            fill()
        end = buf.index(b"\r\n", pos)
        kind, line = chr(buf[pos]), buf[pos + 1:end].decode()
        pos = end + 2
        stack[-1] -= 1
        if kind == "$" and int(line) >= 0:
            while len(buf) < pos + int(line) + 2:
                fill()
            pos += int(line) + 2
        elif kind in "*%~" and int(line) > 0:
            stack.append(int(line) * (2 if kind == "%" else 1))
        while stack and stack[-1] == 0:
            stack.pop()
    return bytes(buf[:pos])


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "src/command"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--save", "", "--appendonly", "no",
             "--dir", tmp],
            stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    sock = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                sys.exit("redis-server did not start")
            sock.sendall(b"INFO server\r\n")
            info = read_frame(sock).decode()
            version = next(l.split(":")[1].strip() for l in info.splitlines()
                           if l.startswith("redis_version:"))
            sock.sendall(b"COMMAND\r\n")
            reply = read_frame(sock)
            path = os.path.join(out_dir, f"redis-{version}.resp")
            with open(path, "wb") as f:
                f.write(reply)
            print(f"wrote {path} ({len(reply)} bytes)")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
