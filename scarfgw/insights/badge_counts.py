"""The numbers badges show, kept in memory and refreshed in the background.

A README view must never cost an engine query: a :class:`BadgeCounts` service asks the
:class:`~scarfgw.insights.model.Reader` for every package's downloads and distinct companies
of each period every ``interval`` seconds (a ``LoopingCall`` on the injected reactor), and
badges read the last answer. A failed refresh is logged and the previous numbers stay.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from scarfgw.insights.badge_options import PERIODS, Period
from scarfgw.insights.model import Reader

log: Final = Logger()

Measure = Literal["downloads", "companies"]
MEASURES: Final[tuple[Measure, ...]] = ("downloads", "companies")
FIRST_DAY: Final = date(2000, 1, 1)
"""The start of the ``total`` period (before any event this gateway can have seen)."""

_DAYS: Final[dict[Period, int]] = {"month": 30, "week": 7}


def period_range(period: Period, today: date) -> tuple[date, date]:
    """The inclusive days of ``period`` ending ``today``."""
    if period == "total":
        return FIRST_DAY, today
    return today - timedelta(days=_DAYS[period] - 1), today


class BadgeCounts(Service):
    """Downloads and distinct companies per package and period, refreshed every
    ``interval`` seconds from ``reader``."""

    def __init__(self, reader: Reader, clock: Any, interval: float = 60.0) -> None:
        self.reader = reader
        self.clock = clock
        self.interval = interval
        self._counts: dict[tuple[Measure, Period], dict[str, int]] = {}
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = clock

    def startService(self) -> None:
        """Refresh now, then every ``interval`` seconds."""
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        """Stop refreshing."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def count(self, measure: Measure, period: Period, package_id: str) -> int:
        """The last known number (0 before the first refresh and for packages without any)."""
        return self._counts.get((measure, period), {}).get(package_id, 0)

    @defer.inlineCallbacks
    def refresh(self) -> Any:
        """Ask the reader for every measure and period; keep the old numbers on failure."""
        today = datetime.fromtimestamp(self.clock.seconds(), UTC).date()
        fresh: dict[tuple[Measure, Period], dict[str, int]] = {}
        try:
            for period in PERIODS:
                start, end = period_range(period, today)
                fresh["downloads", period] = yield self.reader.totals(start, end)
                fresh["companies", period] = yield self.reader.company_counts(start, end)
        except Exception:
            log.failure("refreshing the badge counts failed; the previous numbers stay")
            return
        self._counts = fresh
