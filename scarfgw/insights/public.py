"""``insights.domain``: the insights site (badges, dashboard, API) on the public listeners.

The site itself runs once, in the primary, on ``listen.insights``; the public listeners (in
every worker) hand requests for the insights domain to it through the streaming proxy, as a
reverse proxy would. The domain is added to the certificate domains so it gets an ACME
certificate like any rule domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from scarfgw.http.endpoints import listener_url
from scarfgw.rules.decision import Proxy

if TYPE_CHECKING:
    from scarfgw.config import Config

KIND: Final = "insights"


@dataclass(frozen=True)
class PublicSite:
    """Requests for ``domain`` go to the insights listener at ``decision``'s site URL."""

    domain: str
    decision: Proxy


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
