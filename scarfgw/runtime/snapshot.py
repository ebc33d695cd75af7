"""What one configuration generation answers requests with, built completely before it is
served: a reload builds a new :class:`Snapshot` and swaps one reference (the gateway's), so a
request sees either the old one or the new one, never a mixture.

Also what else a configuration derives for the public listeners: the insights site on its
public domain (``insights.domain``, served through the streaming proxy by the listener on
``listen.insights``), and the domains that get certificates (the rules' and that one).
"""

from __future__ import annotations

from typing import Final

from scarfgw.config import Config
from scarfgw.gateway.clientinfo import TrustedProxies
from scarfgw.gateway.packuments import Packuments
from scarfgw.gateway.proxy import StreamingProxy
from scarfgw.gateway.public import KIND, PublicSite
from scarfgw.http.endpoints import listener_url
from scarfgw.rules.decision import Proxy


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


def public_site(config: Config) -> PublicSite | None:
    """The public insights site of ``config``, if any."""
    domain = config.insights.domain
    url = listener_url(config.listen.insights) if config.listen.insights else None
    if not domain or url is None:
        return None
    return PublicSite(domain, Proxy(backend=domain, kind=KIND, base_url=url, site=True))


def certificate_domains(config: Config) -> frozenset[str]:
    """The domains that get certificates: the rules' and the insights domain."""
    domain = config.insights.domain
    domains = config.router.domains
    return domains | {domain} if domain else domains
