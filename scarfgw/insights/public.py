"""``insights.domain``: the insights site (badges, dashboard, API) on the public listeners.

The site itself runs once, in the primary, on ``listen.insights``; the public listeners (in
every worker) hand requests for the insights domain to it through the streaming proxy, as a
reverse proxy would. The domain is added to the certificate domains so it gets an ACME
certificate like any rule domain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from scarfgw.rules.decision import Proxy

KIND: Final = "insights"
_FIELD: Final = re.compile(r"(?<!\\):")
"""A colon that separates endpoint fields (``\\:`` is a colon inside one)."""


@dataclass(frozen=True)
class PublicSite:
    """Requests for ``domain`` go to the insights listener at ``decision``'s site URL."""

    domain: str
    decision: Proxy


def listener_url(endpoint: str) -> str | None:
    """``http://host:port`` that reaches a ``tcp:PORT[:interface=HOST]`` listener from this
    machine (None for other endpoint kinds or port 0, which no other process can know)."""
    kind, *fields = (part.replace("\\:", ":") for part in _FIELD.split(endpoint))
    if kind != "tcp" or not fields:
        return None
    port, *options = fields
    if not port.isdigit() or int(port) == 0:
        return None
    host = "127.0.0.1"
    for option in options:
        name, _, value = option.partition("=")
        if name == "interface" and value not in ("", "0.0.0.0", "::"):
            host = value
    authority = f"[{host}]" if ":" in host else host
    return f"http://{authority}:{port}"


def public_site(config: Any) -> PublicSite | None:
    """The public insights site of ``config`` (a :class:`~scarfgw.config.Config`), if any."""
    domain = config.insights.domain
    url = listener_url(config.listen.insights) if config.listen.insights else None
    if not domain or url is None:
        return None
    return PublicSite(domain, Proxy(backend=domain, kind=KIND, base_url=url, site=True))


def certificate_domains(config: Any) -> frozenset[str]:
    """The domains that get certificates: the rules' and the insights domain."""
    domain = config.insights.domain
    domains: frozenset[str] = config.router.domains
    return domains | {domain} if domain else domains
