"""The https listener's protocol factory: TLS (SNI, ALPN, session tickets) around the
gateway's HTTP factory."""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory

from scarfgw.tls.manager import TLSService
from scarfgw.tls.transport import TLSServerFactory


def https_factory(tls: TLSService, inner: IProtocolFactory) -> IProtocolFactory:
    """Wrap ``inner`` (the gateway's HTTP factory) in TLS served by ``tls``'s SNI contexts."""
    return TLSServerFactory(tls.server_options(), inner)
