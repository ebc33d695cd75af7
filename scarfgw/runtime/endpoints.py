"""Listening TCP sockets for sharing one port between processes.

With several workers every process gets its own socket bound with ``SO_REUSEPORT``, so the
kernel spreads new connections over them (a single shared socket lets whichever process
wakes first take every pending connection). The endpoint strings themselves are parsed by
:mod:`scarfgw.http.endpoints`.
"""

from __future__ import annotations

import socket

from scarfgw.http.endpoints import parse_tcp_endpoint


def reuseport_sockets(spec: str, count: int) -> list[socket.socket]:
    """``count`` non-blocking listening sockets on the same address, bound with
    ``SO_REUSEPORT`` (port 0 picks one free port for all of them)."""
    address = parse_tcp_endpoint(spec)
    port = address.port
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(address.family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address.interface, port))
            port = sock.getsockname()[1]
            sock.listen(address.backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
