"""What one configuration generation answers requests with, built completely before it is
served: a reload builds a new :class:`Snapshot` and swaps one reference, so a request sees
either the old one or the new one, never a mixture."""

from __future__ import annotations

from typing import Final

from scarfgw.config import Config
from scarfgw.gateway.clientinfo import TrustedProxies
from scarfgw.gateway.packuments import Packuments
from scarfgw.gateway.proxy import StreamingProxy
from scarfgw.insights.public import public_site


class Snapshot:
    """One generation: the config, its router and trusted proxies, the proxy built for its
    proxy settings, the insights site on its public domain, and the npm package documents
    fetched through that proxy (kept, with their cache, by the next generation while the
    proxy settings stay the same). Read-only once built."""

    def __init__(self, config: Config, generation: int, forwarder: StreamingProxy,
                 packuments: Packuments | None = None) -> None:
        self.config: Final = config
        self.generation: Final = generation
        self.router: Final = config.router
        self.trusted: Final = TrustedProxies(config.trusted_proxies)
        self.forwarder: Final = forwarder
        self.packuments: Final = Packuments(forwarder) if packuments is None else packuments
        self.insights: Final = public_site(config)
