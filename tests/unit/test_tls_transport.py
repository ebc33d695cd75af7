"""The TLS transport between the TCP transport and the HTTP channel, in memory: what it
sends, and in how many writes."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from scarfgw.tls.certs import self_signed
from scarfgw.tls.sni import SNIServerOptions
from scarfgw.tls.tickets import TicketKeys
from scarfgw.tls.transport import TLSServerConnection

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


def test_ticket_answer_and_close_notify_leave_in_one_write(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1_800_000_000)
    options = SNIServerOptions(self_signed("fallback.invalid", 0, 10**10),
                               tickets=TicketKeys(tmp_path, clock))
    options.install("a.test", self_signed("a.test", 0, 10**10))
    tcp = CountingTransport()
    server = TLSServerConnection(options, AnswerAndClose())
    server.makeConnection(tcp)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(to_client, to_server, server_hostname="a.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    server.dataReceived(to_server.read())
    to_client.write(b"".join(tcp.writes))
    client.do_handshake()
    client.write(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    tcp.writes.clear()
    server.dataReceived(to_server.read())
    assert len(tcp.writes) == 1 and tcp.disconnecting
    to_client.write(tcp.writes[0])
    assert client.read(4096) == ANSWER
    assert client.read(4096) == b""  # the close_notify came in the same write
    assert client.session is not None and client.session.has_ticket
