"""In-process registry stand-ins for proxy behaviour the real registry cannot show on demand:
scripted answers (redirects, hop-by-hop headers), a huge streamed blob that counts what it
sent, and a backend that accepts connections and never answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server

from tests.support import RecordedRequest, record_request

Answer = tuple[int, list[tuple[str, str]], bytes]


class _Scripted(resource.Resource):
    isLeaf = True

    def __init__(self, answers: dict[str, Answer]) -> None:
        super().__init__()
        self.answers = answers
        self.received: list[RecordedRequest] = []

    def render(self, request: server.Request) -> bytes:
        recorded = record_request(request)
        self.received.append(recorded)
        status, headers, body = self.answers.get(recorded.path, (404, [], b""))
        request.setResponseCode(status)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        return body


class _CountingSite(server.Site):
    connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


@dataclass
class Scripted:
    """A recording upstream answering fixed ``(status, headers, body)`` per path."""

    resource: _Scripted
    site: _CountingSite
    port: Any

    @property
    def url(self) -> str:
        """Base URL."""
        address = self.port.getHost()
        return f"http://{address.host}:{address.port}"

    @property
    def received(self) -> list[RecordedRequest]:
        """Requests received so far."""
        return self.resource.received


@defer.inlineCallbacks
def start_scripted(answers: dict[str, Answer], interface: str = "127.0.0.1") -> Any:
    """Start a :class:`Scripted` upstream on an ephemeral port of ``interface``."""
    scripted = _Scripted(answers)
    site = _CountingSite(scripted)
    port = yield TCP4ServerEndpoint(reactor, 0, interface=interface).listen(site)
    return Scripted(scripted, site, port)


CHUNK = b"\x5a" * 65536


class _BlobProducer:
    """Pull producer writing ``size`` bytes in 64 KiB chunks as the transport drains."""

    def __init__(self, request: server.Request, size: int, blob: Blob) -> None:
        self.request = request
        self.left = size
        self.blob = blob

    def resumeProducing(self) -> None:
        if self.left <= 0:
            self.request.unregisterProducer()
            self.request.finish()
            return
        chunk = CHUNK[: min(len(CHUNK), self.left)]
        self.left -= len(chunk)
        self.blob.sent += len(chunk)
        self.request.write(chunk)

    def stopProducing(self) -> None:
        self.left = 0


@dataclass
class Blob:
    """What the streaming upstream has sent, and whether its request was cut off."""

    size: int
    sent: int = 0
    aborted: defer.Deferred[None] = field(default_factory=defer.Deferred)


class _BlobResource(resource.Resource):
    isLeaf = True

    def __init__(self, blob: Blob) -> None:
        super().__init__()
        self.blob = blob

    def render_GET(self, request: server.Request) -> Any:
        request.setHeader(b"content-length", b"%d" % self.blob.size)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.notifyFinish().addErrback(lambda _: self.blob.aborted.callback(None))
        request.registerProducer(_BlobProducer(request, self.blob.size, self.blob), False)
        return server.NOT_DONE_YET


@defer.inlineCallbacks
def start_blob_upstream(size: int) -> Any:
    """An upstream streaming a ``size``-byte blob on every path; returns ``(Blob, port)``."""
    blob = Blob(size)
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server.Site(_BlobResource(blob)))
    return blob, port


class _Silent(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


@defer.inlineCallbacks
def start_silent_upstream() -> Any:
    """A backend that accepts connections and reads requests but never answers."""
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(_Silent))
    return port


class PausingClient(protocol.Protocol):
    """Sends one request, stops reading after the first bytes, and counts what it got."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = 0
        self.first_data: defer.Deferred[None] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.tcp: Any = cast(Any, self.transport)
        self.tcp.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if not self.first_data.called:
            self.tcp.pauseProducing()
            self.first_data.callback(None)

    def abort(self) -> None:
        """Hang up without reading the rest."""
        self.tcp.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

