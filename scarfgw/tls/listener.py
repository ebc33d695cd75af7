"""The https listener: TLS (SNI contexts of the TLS service) around the gateway's HTTP
factory. A connection the HTTP factory refuses (``limits.max_connections``) gets no TLS
layer either: it is closed at once."""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory

from scarfgw.tls.manager import TLSService
from scarfgw.tls.transport import TLSServerFactory


def https_factory(tls: TLSService, inner: IProtocolFactory) -> IProtocolFactory:
    """Wrap ``inner`` (the gateway's HTTP factory) in TLS served by ``tls``'s SNI contexts."""
    return TLSServerFactory(tls.server_options(), inner)
