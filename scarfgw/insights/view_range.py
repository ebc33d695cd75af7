"""The range a dashboard page shows: ``from``, ``to`` and ``interval`` from its query, and the
periods of that range, so that a chart shows the days without downloads as zero.

Pure: query values and today's date in, a :class:`ViewRange` or :class:`RangeError` out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from scarfgw.insights.api import MAX_DAYS
from scarfgw.insights.model import INTERVALS, Interval

PRESETS: Final = (7, 30, 90, 365)
"""The ranges offered as links, in days ending today."""
_MAX_PERIODS: Final = 400


class RangeError(ValueError):
    """A range the dashboard cannot show; the message says why."""


@dataclass(frozen=True)
class ViewRange:
    """Inclusive days ``start`` to ``end`` in periods of ``interval``."""

    start: date
    end: date
    interval: Interval

    @property
    def days(self) -> int:
        """How many days the range spans."""
        return (self.end - self.start).days + 1

    def query(self) -> str:
        """The query string that shows this range again."""
        return f"from={self.start.isoformat()}&to={self.end.isoformat()}&interval={self.interval}"


def _day(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RangeError(f"{name}: a date as YYYY-MM-DD, not {value[:20]!r}") from None


def parse_range(query: Mapping[str, str], today: date) -> ViewRange:
    """The range in ``query`` (default: the 30 days ending ``today``, by day)."""
    end = _day("to", query["to"]) if query.get("to") else today
    start = _day("from", query["from"]) if query.get("from") else end - timedelta(days=29)
    interval = query.get("interval") or "day"
    if interval not in INTERVALS:
        raise RangeError(f"interval: one of {', '.join(INTERVALS)}")
    if start > end:
        raise RangeError("from: must not be after to")
    if (end - start).days + 1 > MAX_DAYS:
        raise RangeError(f"the range may span at most {MAX_DAYS} days, as in the API")
    view = ViewRange(start, end, interval)
    if len(periods(view)) > _MAX_PERIODS:
        raise RangeError(f"at most {_MAX_PERIODS} periods: choose a longer interval")
    return view


def period_start(day: date, interval: Interval) -> date:
    """The first day of the period that holds ``day`` (weeks start on Monday)."""
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    if interval == "year":
        return day.replace(month=1, day=1)
    return day


def periods(view: ViewRange) -> list[date]:
    """The first days of the periods that ``view`` touches, in order."""
    found: list[date] = []
    current = period_start(view.start, view.interval)
    while current <= view.end:
        found.append(current)
        if view.interval == "day":
            current += timedelta(days=1)
        elif view.interval == "week":
            current += timedelta(days=7)
        elif view.interval == "month":
            current = (current + timedelta(days=32)).replace(day=1)
        else:
            current = current.replace(year=current.year + 1)
    return found
