"""Idle keep-alive connections: scarfgw's RSS with N clients that each made one request.

Usage: ``python bench/idle.py [--connections 10000] [--python PYTHON]``.
Starts the gateway as bench/run.py does (1,000 docker domains, events to a JSONL sink, one
worker), reads its RSS at rest, opens the connections (each sends the docker manifest
request and reads its 307, then stays open), reads the RSS again, checks that every
connection still answers a second request, and prints the figures. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import resource
import selectors
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

from run import DOCKER_PATH, DOCKER_UA, REPO, docker_host, start_gateway, stop_children

BUDGET_MIB = 200


def request(host: str) -> bytes:
    """The docker manifest GET, keep-alive."""
    return (f"GET {DOCKER_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {DOCKER_UA}\r\n\r\n"
            .encode())


def ask_all(sockets: list[socket.socket], payload: bytes, timeout: float = 60.0) -> int:
    """Send ``payload`` on every socket and read one 307 head from each; how many answered."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.sendall(payload)
        selector.register(sock, selectors.EVENT_READ, b"")
    answered = 0
    deadline = time.monotonic() + timeout
    while answered < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(1.0):
            sock = cast(socket.socket, key.fileobj)
            data = key.data + sock.recv(4096)
            if b"\r\n\r\n" in data:
                if not data.startswith(b"HTTP/1.1 307 "):
                    raise SystemExit(f"unexpected answer: {data[:80]!r}")
                selector.unregister(sock)
                answered += 1
            else:
                selector.modify(sock, selectors.EVENT_READ, data)
    selector.close()
    return answered


def main(argv: list[str] | None = None) -> int:
    """Open the connections, print RSS at rest and with them all open."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--source", type=Path, default=REPO)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections + 1000  # per process: this one and the gateway (inherits it)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise SystemExit(f"open-file limit {hard} < {wanted}: raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))

    tmp = Path(tempfile.mkdtemp(prefix="scarfgw-idle-"))
    atexit.register(shutil.rmtree, tmp, True)
    atexit.register(stop_children)
    gateway = start_gateway(tmp, "scarfgw", 1000, args.python, args.source)
    time.sleep(1)
    at_rest = gateway.rss_mib()
    host = docker_host(500)
    sockets: list[socket.socket] = []
    started = time.monotonic()
    for _ in range(args.connections):
        sockets.append(socket.create_connection(("127.0.0.1", gateway.port), timeout=30))
    first = ask_all(sockets, request(host))
    opened = time.monotonic() - started
    time.sleep(2)
    held = gateway.rss_mib()
    second = ask_all(sockets, request(host))
    after_second = gateway.rss_mib()
    for sock in sockets:
        sock.close()
    print(f"{args.connections:,} keep-alive connections opened and answered in {opened:.1f} s "
          f"({first:,} answered; second request on each: {second:,} answered)")
    print(f"gateway RSS: {at_rest:.1f} MiB at rest, {held:.1f} MiB holding them idle, "
          f"{after_second:.1f} MiB after a second request on each "
          f"(budget {BUDGET_MIB} MiB: {'within' if held < BUDGET_MIB else 'OVER'})")
    return 0 if first == second == args.connections else 1


if __name__ == "__main__":
    sys.exit(main())
