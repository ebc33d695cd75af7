"""The TLS transport between the TCP transport and the HTTP channel, in memory: what it
sends, and in how many writes."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from scarfgw.tls.certs import self_signed
from scarfgw.tls.sni import SNIServerOptions
from scarfgw.tls.tickets import TicketKeys
from scarfgw.tls.transport import HELD_BYTES, TLSServerConnection

ANSWER = b"HTTP/1.1 307 Temporary Redirect\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class CountingTransport(StringTransport):
    """Remembers every write separately."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class AnswerAndClose(Protocol):
    """Answers the first bytes it gets and closes, as the channel does for
    ``Connection: close``."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(ANSWER)
        self.transport.loseConnection()


def connected(tmp_path: Path, inner: Protocol, tcp: StringTransport
              ) -> tuple[TLSServerConnection, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A server connection over ``tcp`` with its handshake done by an in-memory client: the
    server, the client, and the client's outgoing and incoming BIOs."""
    clock = Clock()
    clock.advance(1_800_000_000)
    options = SNIServerOptions(self_signed("fallback.invalid", 0, 10**10),
                               tickets=TicketKeys(tmp_path, clock))
    options.install("a.test", self_signed("a.test", 0, 10**10))
    server = TLSServerConnection(options, inner)
    server.makeConnection(tcp)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(to_client, to_server, server_hostname="a.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    server.dataReceived(to_server.read())
    to_client.write(tcp.value())
    client.do_handshake()
    return server, client, to_server, to_client


def test_ticket_answer_and_close_notify_leave_in_one_write(tmp_path: Path) -> None:
    tcp = CountingTransport()
    server, client, to_server, to_client = connected(tmp_path, AnswerAndClose(), tcp)
    client.write(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    tcp.writes.clear()
    server.dataReceived(to_server.read())
    assert len(tcp.writes) == 1 and tcp.disconnecting
    to_client.write(tcp.writes[0])
    assert client.read(4096) == ANSWER
    assert client.read(4096) == b""  # the close_notify came in the same write
    assert client.session is not None and client.session.has_ticket


class PausingTransport(StringTransport):
    """Pauses its streaming producer once more than ``limit`` bytes wait, as Twisted's TCP
    transport does (nothing is ever sent here)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and len(self.value()) > self.limit:
            self.producer.pauseProducing()


class Flood(Protocol):
    """Answers one read with up to ``count`` responses of 1 KiB, stopping once paused (as
    the channel stops answering pipelined requests)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.written = 0
        self.paused = False

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        while self.written < self.count and not self.paused:
            self.transport.write(b"x" * 1024)
            self.written += 1


def test_responses_written_during_one_read_are_paused_by_the_tcp_buffer(
        tmp_path: Path) -> None:
    """Output held back during a read reaches the TCP transport once it passes HELD_BYTES,
    so the transport's buffer limit pauses the channel before it answers everything."""
    tcp = PausingTransport(limit=64 * 1024)
    flood = Flood(count=1000)
    server, client, to_server, _ = connected(tmp_path, flood, tcp)
    client.write(b"GET / HTTP/1.1\r\n\r\n" * 100)
    server.dataReceived(to_server.read())
    assert flood.paused
    assert 64 <= flood.written <= 64 + HELD_BYTES // 1024 + 1
    assert len(tcp.value()) < 64 * 1024 + HELD_BYTES + 1024
