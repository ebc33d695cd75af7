"""The HTTP channel on a real socket: responses larger than the socket takes at once arrive
whole and in order; slow readers are served to the end, readers that stop are cut off."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest_twisted
from twisted.internet import reactor, threads

from scarfgw.http.channel import GatewayFactory, GatewayRequest

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


def read_slowly(port: int, rate: int) -> int:
    """GET /big on a keep-alive connection reading about ``rate`` bytes per second; how many
    body bytes arrived before the body was complete or the connection ended."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        started = time.monotonic()
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < len(BIG):
            chunk = sock.recv(16384)
            if not chunk:
                break
            data += chunk
            ahead = len(data) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        return len(data.split(b"\r\n\r\n", 1)[1])


def answer_or_stream(request: GatewayRequest) -> None:
    """/stream starts a 4 MiB streamed response that never finishes; the rest as answer()."""
    if request.uri == b"/stream":
        request.start(200, [(b"Content-Length", b"%d" % len(BIG))])
        request.write(BIG)
    else:
        answer(request)


@pytest_twisted.inlineCallbacks
def test_a_slow_reader_gets_the_whole_response_and_a_stuck_one_is_cut_off() -> Any:
    factory = GatewayFactory(answer_or_stream, "http", 1024, reactor, timeout=1.0)
    tcp: Any = reactor
    port = tcp.listenTCP(0, factory, interface="127.0.0.1")
    number = port.getHost().port
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    stuck.connect(("127.0.0.1", number))
    try:
        stuck.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        received = yield threads.deferToThread(read_slowly, number, 1_500_000)
        assert received == len(BIG)  # about 3 s with a 1 s timeout: never cut short
        stuck_port = stuck.getsockname()[1]
        assert all(channel.transport.getPeer().port != stuck_port  # type: ignore[union-attr]
                   for channel in factory.channels)  # cut off, having read nothing for 1 s
    finally:
        stuck.close()
        yield port.stopListening()
