"""``insights.domain``: the insights site (badges, dashboard, API) on the public listeners.

The site itself runs once, in the primary, on ``listen.insights``; the public listeners (in
every worker) hand requests for the insights domain to it through the streaming proxy, as a
reverse proxy would (the runtime builds the :class:`PublicSite` of each configuration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from scarfgw.rules.decision import Proxy

KIND: Final = "insights"
"""The kind (in metrics and the access log) of the requests for the insights domain."""


@dataclass(frozen=True)
class PublicSite:
    """Requests for ``domain`` go to the insights listener at ``decision``'s site URL."""

    domain: str
    decision: Proxy
