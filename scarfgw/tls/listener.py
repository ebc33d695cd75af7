"""The https listener's protocol factory: TLS (SNI, ALPN) around the gateway's HTTP factory."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory

from scarfgw.tls.hello import MAX_HELLO_BYTES, offered_alpn
from scarfgw.tls.manager import TLSService


class HelloPeekingTLS(BufferingTLSTransport):
    """Records the ClientHello's ALPN offer in ``offered_protocols`` for the SNI callback."""

    offered_protocols: tuple[bytes, ...] = ()
    _hello: bytes | None = b""

    def dataReceived(self, data: bytes) -> None:
        """Peek at the first TLS record, then let OpenSSL have every byte."""
        if self._hello is not None:
            self._hello += data
            offered = offered_alpn(self._hello)
            if offered is not None or len(self._hello) > MAX_HELLO_BYTES:
                self.offered_protocols = offered or ()
                self._hello = None
        super().dataReceived(data)


class _RefusingTLSFactory(TLSMemoryBIOFactory):
    """TLS around a factory that may refuse a connection: then no TLS protocol is built
    either (the connection is closed at once)."""

    def buildProtocol(self, addr: IAddress | None) -> Any:
        """The TLS protocol around ``wrappedFactory``'s, or ``None`` when it refused."""
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.protocol(self, inner)


def https_factory(tls: TLSService, inner: IProtocolFactory) -> IProtocolFactory:
    """Wrap ``inner`` (the gateway's HTTP factory) in TLS served by ``tls``'s SNI contexts."""
    factory: Any = _RefusingTLSFactory(tls.server_options(), False, inner)
    factory.protocol = HelloPeekingTLS
    return factory
