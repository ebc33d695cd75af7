"""Chart geometry for the dashboard: a downloads bar chart and 30-day sparklines.

Pure: numbers in, coordinates out; the templates draw them as inline SVG. A chart library
(pygal) was weighed and not taken: its SVG pulls its tooltips script from a CDN unless
configured away, sets its own fonts and colours, and has no table alternative; these few
shapes follow the page's own CSS and need no script at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from scarfgw.insights.badge_options import compact

WIDTH: Final = 720
HEIGHT: Final = 200
"""The plot's view box; axis labels are HTML around it, placed in percent of it."""
_TOP: Final = 6


@dataclass(frozen=True)
class Bar:
    """One period's bar, with what it says to a reader."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Tick:
    """An axis label at ``percent`` of the plot's width (periods) or height from the top
    (counts), with the gridline's ``y`` in the view box."""

    percent: float
    text: str
    y: float = 0.0


@dataclass(frozen=True)
class BarChart:
    """A downloads-per-period chart in a ``WIDTH`` x ``HEIGHT`` view box."""

    bars: tuple[Bar, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]


def _nice_top(peak: int) -> int:
    """The smallest 1/2/5 x 10^n at or above ``peak`` (at least 4, for four gridlines)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top * 4 >= peak:
                return step * top * 4
        top *= 10


def period_label(period: date, interval: str) -> str:
    """How a period's first day reads on an axis (``Mar 4``, ``Mar 2026``, ``2026``)."""
    if interval == "year":
        return str(period.year)
    if interval == "month":
        return period.strftime("%b %Y")
    return f"{period.strftime('%b')} {period.day}"


def bar_chart(points: Sequence[tuple[date, int]], interval: str) -> BarChart:
    """The chart of ``(period, downloads)`` in order."""
    top = _nice_top(max((count for _, count in points), default=0))
    plot_height = HEIGHT - _TOP
    slot = WIDTH / max(len(points), 1)
    gap = min(slot * 0.2, 4.0)
    bars = []
    for index, (period, count) in enumerate(points):
        height = plot_height * count / top
        bars.append(Bar(x=index * slot + gap / 2, y=HEIGHT - height,
                        width=max(slot - gap, 1.0), height=height,
                        title=f"{period_label(period, interval)}: {count:,} downloads"))
    y_ticks = []
    for i in range(5):
        y = HEIGHT - plot_height * i / 4
        y_ticks.append(Tick(100 * y / HEIGHT, compact(top * i // 4), y))
    every = max(1, -(-len(points) // 6))
    x_ticks = tuple(Tick(100 * (index + 0.5) / max(len(points), 1),
                         period_label(period, interval))
                    for index, (period, _) in enumerate(points) if index % every == 0)
    return BarChart(tuple(bars), tuple(y_ticks), x_ticks)


def sparkline(counts: Sequence[int], width: int = 120, height: int = 32) -> str:
    """SVG polyline points for ``counts`` (oldest first) in a ``width`` x ``height`` box."""
    if not counts:
        return ""
    peak = max(max(counts), 1)
    step = width / max(len(counts) - 1, 1)
    return " ".join(f"{index * step:.1f},{height - 2 - (height - 4) * count / peak:.1f}"
                    for index, count in enumerate(counts))
