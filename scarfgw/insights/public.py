"""``insights.domain``: the insights site (badges, dashboard, API) on the public listeners.

The site itself runs once, in the primary, on ``listen.insights``; the public listeners (in
every worker) hand requests for the insights domain to it through the streaming proxy, as a
reverse proxy would. The domain is added to the certificate domains so it gets an ACME
certificate like any rule domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from scarfgw.rules.decision import Proxy
from scarfgw.runtime.endpoints import parse_tcp_endpoint

if TYPE_CHECKING:  # scarfgw.config imports listener_url from here
    from scarfgw.config import Config

KIND: Final = "insights"
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})
"""Interfaces meaning every address: such a listener is reached on 127.0.0.1 (an IPv6
wildcard socket takes IPv4 too)."""


@dataclass(frozen=True)
class PublicSite:
    """Requests for ``domain`` go to the insights listener at ``decision``'s site URL."""

    domain: str
    decision: Proxy


def listener_url(endpoint: str) -> str | None:
    """``http://host:port`` that reaches a ``tcp:``/``tcp6:`` listener from this machine
    (None for other endpoint kinds or port 0, which no other process can know)."""
    try:
        address = parse_tcp_endpoint(endpoint)
    except ValueError:
        return None
    if address.port == 0:
        return None
    host = "127.0.0.1" if address.interface in _WILDCARDS else address.interface
    authority = f"[{host}]" if ":" in host else host
    return f"http://{authority}:{address.port}"


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
