"""The HTTP channel on a real socket: responses larger than the socket takes at once, sent
straight from the handler, arrive whole and in order behind each other."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import reactor, threads

from scarfgw.web.channel import GatewayFactory, GatewayRequest

BIG = bytes(range(256)) * 16384  # 4 MiB: far more than one send() takes


def answer(request: GatewayRequest) -> None:
    """A whole 4 MiB response, then a small one, depending on the target."""
    body = BIG if request.uri == b"/big" else b"small"
    request.respond(200, [(b"Content-Type", b"application/octet-stream")], body)


def read_all(port: int) -> bytes:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = []
        while chunk := sock.recv(1024):
            received.append(chunk)
        return b"".join(received)


@pytest_twisted.inlineCallbacks
def test_large_pipelined_responses_arrive_whole_and_in_order() -> Any:
    factory = GatewayFactory(answer, "http", 1024, reactor)
    tcp: Any = reactor
    port = tcp.listenTCP(0, factory, interface="127.0.0.1")
    try:
        data = yield threads.deferToThread(read_all, port.getHost().port)
    finally:
        yield port.stopListening()
    parts = data.split(b"\r\n\r\n")
    assert parts[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 4194304" in parts[0]
    first, rest = parts[1][: len(BIG)], parts[1][len(BIG):]
    assert first == BIG
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert parts[2].startswith(b"small")
    assert parts[3] == BIG
    assert b"Connection: close" in parts[2]
