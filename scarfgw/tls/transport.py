"""The https listener's TLS layer: the stdlib's ``SSLObject`` on memory BIOs, between the
TCP transport and the gateway's HTTP channel.

Leaner than Twisted's ``TLSMemoryBIOProtocol`` on the request path: a response is encrypted
as soon as the channel writes it and its records go straight to the socket when nothing is
queued (the plain-HTTP direct send), instead of being aggregated until the reactor's next
turn and then queued for one more; received records are decrypted until the BIOs are
empty, without an exception per read. Flow control is the TCP transport's own: producers
are registered on it and pausing reads pauses it, as encrypting never blocks. Output written
while a read is delivered is held to leave in one send, up to :data:`HELD_BYTES`.

Before OpenSSL sees the first record, the ClientHello's ALPN offer is read
(:mod:`scarfgw.tls.hello`), so that the SNI callback can serve a TLS-ALPN-01 challenge
certificate to ACME validators only.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Final, cast

from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from scarfgw.http.channel import send_directly, sends_directly
from scarfgw.tls.hello import MAX_HELLO_BYTES, offered_alpn
from scarfgw.tls.sni import PeekedSSLObject, SNIServerOptions

READ_BYTES: Final = 16 * 1024
"""Plaintext asked of OpenSSL per read: a whole record's (it returns one record at most), so
nothing decrypted is left behind in OpenSSL once the incoming BIO is empty."""
HELD_BYTES: Final = 16 * 1024
"""Encrypted output held back while a read is delivered, at most: past it, what is held goes
to the TCP transport, whose buffer limit then pauses the channel (backpressure)."""


class TLSServerConnection(Protocol):
    """One TLS connection: the TCP transport's protocol and the HTTP channel's transport."""

    def __init__(self, options: SNIServerOptions, inner: IProtocol) -> None:
        self.options = options
        self.inner = inner
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls: PeekedSSLObject | None = None
        self.hello = b""
        self.handshaken = False
        self.early: list[bytes] = []
        self.disconnecting = False
        self.direct = False
        self.reading = False

    # -- the TCP transport's side -----------------------------------------------------------

    def connectionMade(self) -> None:
        """Connect the HTTP channel (its timeouts run from now on)."""
        self.direct = sends_directly(self.transport)
        self.inner.makeConnection(self)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        """Feed OpenSSL; deliver what it decrypts."""
        if self.tls is None:
            self.hello += data
            offered = offered_alpn(self.hello)
            if offered is None and len(self.hello) <= MAX_HELLO_BYTES:
                return
            data, self.hello = self.hello, b""
            self.tls = self.options.connection(self.incoming, self.outgoing, offered or ())
        self.incoming.write(data)
        if self.handshaken or self._handshake():
            self._read()

    def _handshake(self) -> bool:
        """Advance the handshake; True once it is complete."""
        assert self.tls is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError:
            self._flush()  # the alert, if OpenSSL wrote one, goes out before the FIN
            self.disconnecting = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return False
        self.handshaken = True
        early, self.early = self.early, []
        for data in early:
            self.write(data)
        return True  # the session ticket leaves with the first response (see _read)

    def _read(self) -> None:
        """Deliver what OpenSSL decrypts, then send what it wrote meanwhile.

        Right after the handshake that includes the session ticket: the client's request
        usually came with its Finished, so ticket and response leave in one segment. Sent
        apart, Nagle's algorithm would hold the response until the client acknowledged the
        ticket, which it delays by up to 40 ms. Responses written meanwhile (and the
        close_notify of a ``Connection: close`` answer) join them: one send per read.
        """
        tls = self.tls
        assert tls is not None
        deliver = self.inner.dataReceived
        self.reading = True
        try:
            while not self.disconnecting:  # once closing, the channel takes no more requests
                try:
                    data = tls.read(READ_BYTES)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLError:
                    self.abortConnection()
                    break
                if not data:
                    self.loseConnection()  # the client's close_notify: it sends nothing more
                    break
                deliver(data)
                if not self.incoming.pending:
                    break
        finally:
            self.reading = False
        self._flush()

    def _flush(self) -> None:
        """Send what OpenSSL wrote: straight to the socket when nothing is queued."""
        if self.outgoing.pending:
            data = self.outgoing.read()
            if self.direct:
                send_directly(self.transport, data)
            else:
                self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the channel; drop the TLS state."""
        self.disconnecting = True
        self.tls = None
        self.inner.connectionLost(reason)

    # -- the HTTP channel's side (ITransport, IPushProducer, IConsumer) ---------------------

    def write(self, data: bytes) -> None:
        """Encrypt ``data`` and send it, at once or, while a read is delivered, when it ends
        or more than :data:`HELD_BYTES` wait (held until the handshake is complete; dropped
        once the connection is closing)."""
        if self.disconnecting or self.tls is None or not data:
            return
        if not self.handshaken:
            self.early.append(data)
            return
        try:
            self.tls.write(data)
        except ssl.SSLError:
            self.abortConnection()
            return
        if not self.reading or self.outgoing.pending >= HELD_BYTES:
            self._flush()

    def writeSequence(self, data: list[bytes]) -> None:
        """Encrypt and send the pieces as one write."""
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Send close_notify after what was written, then close the TCP connection once its
        buffer is sent (the client's close_notify is not waited for)."""
        if self.disconnecting:
            return
        self.disconnecting = True
        if self.tls is not None and self.handshaken:
            with contextlib.suppress(ssl.SSLError):  # ours is written; the peer's not awaited
                self.tls.unwrap()
            self._flush()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abortConnection(self) -> None:
        """Close the TCP connection at once."""
        self.disconnecting = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def getPeer(self) -> IAddress:
        """The client's address."""
        return self.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        """The listener's address."""
        return self.transport.getHost()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        """Stop reading from the client."""
        cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        """Read from the client again."""
        cast(IPushProducer, self.transport).resumeProducing()

    def stopProducing(self) -> None:
        """Close the connection."""
        cast(IPushProducer, self.transport).stopProducing()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Pause ``producer`` while the TCP transport's buffer is full."""
        self.transport.registerProducer(producer, streaming)  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:
        """Detach the producer."""
        self.transport.unregisterProducer()  # type: ignore[union-attr]


class TLSServerFactory(Factory):
    """Wraps every connection of ``inner`` (the gateway's HTTP factory) in TLS."""

    noisy = False

    def __init__(self, options: SNIServerOptions, inner: IProtocolFactory) -> None:
        self.options = options
        self.inner = inner

    def doStart(self) -> None:
        """Start the inner factory too (its timeout sweep)."""
        self.inner.doStart()

    def doStop(self) -> None:
        """Stop the inner factory too."""
        self.inner.doStop()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """A TLS connection around the inner factory's protocol."""
        inner = self.inner.buildProtocol(cast(IAddress, addr))
        if inner is None:
            return None
        return TLSServerConnection(self.options, inner)
