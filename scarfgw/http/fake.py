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

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from scarfgw.http.channel import GatewayFactory, GatewayRequest


@dataclass
class FakeResponse:
    """One response as the client would read it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (any letter case)."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def _not_parsed(request: GatewayRequest) -> None:
    raise AssertionError("the fake connection hands requests over itself; nothing is parsed")


class FakeConnection:
    """A real :class:`GatewayChannel` on an in-memory transport; what the gateway sends
    lands in ``transport``."""

    def __init__(self, clock: Any, peer_host: str | None = "127.0.0.1", tls: bool = False,
                 max_body_bytes: int = 65536) -> None:
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", peer_host or "0.0.0.0", 40000))
        channel = GatewayFactory(_not_parsed, "fake", max_body_bytes, clock,
                                 tls=tls).buildProtocol(None)
        assert channel is not None
        channel.makeConnection(self.transport)
        channel.peer_host = peer_host
        self.channel = channel

    def request(self, method: bytes = b"GET", target: bytes = b"/",
                headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b"",
                version: str = "1.1") -> GatewayRequest:
        """A request as the channel would hand it to the gateway."""
        channel = self.channel
        request = GatewayRequest(channel, method, target, list(headers), version, True)
        channel.current = request
        if len(body) > channel.factory.max_body_bytes:
            request.body_too_large = True
        else:
            request._body_parts.append(body)
        return request

    def response(self) -> FakeResponse:
        """The (last) response sent so far."""
        data = self.transport.value()
        return parse_response(data[data.rfind(b"HTTP/1.1 "):])


def parse_response(data: bytes, head_request: bool = False) -> FakeResponse:
    """One response as bytes (read until the server closed), its chunked body decoded."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    response = FakeResponse(status, headers, b"")
    if head_request:
        return response
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2:]
        response.body = bytes(body)
    else:
        response.body = rest
    return response
