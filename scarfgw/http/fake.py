"""An in-memory connection for unit tests: real :class:`GatewayRequest` objects, answered
into a byte buffer, without sockets or a reactor loop.

>>> connection = FakeConnection(clock)
>>> request = connection.request(b"GET", b"/v2/", [(b"Host", b"cr.example.test")])
>>> gateway.handle(request)
>>> connection.response().status
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.testing import StringTransport

from scarfgw.http.channel import DateHeader, GatewayRequest


@dataclass
class FakeListener:
    """The listener settings a request reads."""

    tls: bool
    max_body_bytes: int
    date: DateHeader


@dataclass
class FakeResponse:
    """One response as the client would read it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (any letter case)."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class FakeConnection:
    """A client connection held in memory; what the gateway sends lands in ``transport``."""

    def __init__(self, clock: Any, peer_host: str | None = "127.0.0.1", tls: bool = False,
                 max_body_bytes: int = 65536) -> None:
        self.peer_host = peer_host
        self.factory = FakeListener(tls, max_body_bytes, DateHeader(clock))
        self.transport = StringTransport()
        self.done: list[GatewayRequest] = []

    def send(self, data: bytes) -> None:
        """Keep response bytes."""
        self.transport.write(data)

    def last_response(self, request: GatewayRequest) -> bool:
        """The connection closes after a request that did not ask to keep it."""
        return not request.keep_alive

    def request_done(self, request: GatewayRequest) -> None:
        """Note a finished response."""
        self.done.append(request)

    def request(self, method: bytes = b"GET", target: bytes = b"/",
                headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b"",
                version: str = "1.1") -> GatewayRequest:
        """A request as the channel would hand it to the gateway."""
        request = GatewayRequest(self, method, target, list(headers), version, True)
        if len(body) > self.factory.max_body_bytes:
            request.body_too_large = True
        else:
            request._body_parts.append(body)
        return request

    def response(self) -> FakeResponse:
        """The (last) response sent so far, its chunked body decoded."""
        data = self.transport.value()
        head, _, body = data.rpartition(b"HTTP/1.1 ")[2].partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = [(name, value.strip()) for name, _, value in
                   (line.partition(":") for line in lines)]
        response = FakeResponse(int(status_line.split(" ", 1)[0]), headers, body)
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            response.body = _unchunk(body)
        return response


def _unchunk(data: bytes) -> bytes:
    body = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += data[:size]
        data = data[size + 2:]
    return bytes(body)
