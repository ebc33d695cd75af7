"""The maintainer-facing half of the insights site: README badges and the dashboard.

:class:`InsightsUI` is a service (its child refreshes the badge counts) that mounts the
badges and the dashboard on the insights site's root resource.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.web.resource import Resource

from scarfgw.insights import dashboard
from scarfgw.insights.badge_counts import BadgeCounts
from scarfgw.insights.badges import BadgeResource, Badges
from scarfgw.insights.model import Reader
from scarfgw.insights.session import Authenticate, Sessions


class InsightsUI(MultiService):
    """Badges (when ``badges``) and the dashboard over ``reader``, signed in through
    ``authenticate``."""

    def __init__(self, reader: Reader, authenticate: Authenticate, clock: Any,
                 badges: bool = True, refresh_seconds: float = 60.0) -> None:
        super().__init__()
        self.counts = BadgeCounts(reader, clock, refresh_seconds)
        self.counts.setServiceParent(self)
        self.badges = Badges(reader, self.counts) if badges else None
        self.dashboard = dashboard.Dashboard(reader, Sessions(authenticate, clock), clock)

    def install(self, root: Resource) -> None:
        """Mount ``/badge``, ``/package`` (Scarf's badge paths) and the dashboard on ``root``."""
        if self.badges is not None:
            root.putChild(b"badge", BadgeResource(b"badge", self.badges))
            root.putChild(b"package", BadgeResource(b"package", self.badges))
        dashboard.install(root, self.dashboard)
