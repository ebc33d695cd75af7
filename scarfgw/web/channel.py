"""HTTP/1.1 server plumbing: a lean request class, a channel that rejects TLS on plain HTTP,
and the factory that counts connections per listener."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.internet.interfaces import IAddress, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http

from scarfgw import metrics

TLS_HANDSHAKE_RECORD = 0x16


class GatewayRequest(http.Request):
    """A request that keeps at most ``max_body_bytes`` of its body and hands itself to
    the gateway's ``handle`` once fully received."""

    body_too_large = False
    accounted = False
    """Set once the gateway has counted the finished request (metrics, in-flight)."""

    def gotLength(self, length: int | None) -> None:
        """Note an announced body that exceeds the limit; keep memory bounded either way."""
        factory: GatewayFactory = self.channel.factory
        if length is not None and length > factory.max_body_bytes:
            self.body_too_large = True
        self._body_budget = factory.max_body_bytes
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Store body bytes up to the limit; beyond it only remember that it was exceeded."""
        if len(data) > self._body_budget:
            self.body_too_large = True
            data = data[: self._body_budget]
        self._body_budget -= len(data)
        if data and self.content is not None:
            self.content.write(data)

    def parseCookies(self) -> None:
        """Leave cookies unparsed: the gateway never reads them."""

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Twisted's, minus parsing the query into ``args`` (the gateway reads the raw target);
        POST bodies still go through Twisted's form parsing, unchanged."""
        if command == b"POST":
            super().requestReceived(command, path, version)
            return
        if self.content is not None:
            self.content.seek(0, 0)
        self.args = {}
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.partition(b"?")[0]
        self.process()

    def respond(self, status: int, headers: Iterable[tuple[bytes, bytes]] = (),
                body: bytes = b"") -> None:
        """Send a whole response: status, headers (Content-Length added unless given), body.

        For HEAD, Twisted sends the headers only.
        """
        self.setResponseCode(status)
        raw = self.responseHeaders
        has_length = False
        for name, value in headers:
            raw.addRawHeader(name, value)
            has_length = has_length or name.lower() == b"content-length"
        if not has_length:
            raw.setRawHeaders(b"content-length", [b"%d" % len(body)])
        if body:
            self.write(body)
        self.finish()

    def process(self) -> None:
        """Hand the complete request to the gateway (no resource traversal)."""
        self.channel.factory.handle(self)


class GatewayChannel(http.HTTPChannel):
    """HTTP channel that closes at once when a plain-HTTP listener receives a TLS ClientHello,
    so clients that probe TLS first (skopeo, containerd) fall back to HTTP without a stall."""

    _first_data = True

    def dataReceived(self, data: bytes) -> None:
        """Reject a TLS handshake as the first bytes; otherwise parse HTTP."""
        if self._first_data:
            self._first_data = False
            if data and data[0] == TLS_HANDSHAKE_RECORD and not self.factory.tls:
                cast(ITCPTransport, self.transport).abortConnection()
                return
        super().dataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request or header line over the limit: say so (Twisted would just hang up)."""
        cast(ITCPTransport, self.transport).write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        self.loseConnection()

    def connectionMade(self) -> None:
        """Count the connection on its listener."""
        self.factory.connections.inc()
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Uncount the connection."""
        self.factory.connections.dec()
        super().connectionLost(reason)


class GatewayFactory(http.HTTPFactory):
    """Builds gateway channels for one listener (``listener`` names it in metrics)."""

    protocol = GatewayChannel  # type: ignore[assignment]

    def __init__(
        self,
        handle: Callable[[GatewayRequest], None],
        listener: str,
        max_body_bytes: int,
        tls: bool = False,
        reactor: Any = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(timeout=timeout, reactor=reactor)
        self.handle = handle
        self.listener = listener
        self.max_body_bytes = max_body_bytes
        self.tls = tls
        self.connections = metrics.OPEN_CONNECTIONS.labels(listener)

    def buildProtocol(self, addr: IAddress | None) -> GatewayChannel:  # type: ignore[override]
        """A channel bound to this factory."""
        channel = cast(GatewayChannel, super().buildProtocol(addr))
        channel.requestFactory = GatewayRequest
        return channel

    def log(self, request: http.Request) -> None:
        """No per-request access log here (the gateway records events and metrics)."""
