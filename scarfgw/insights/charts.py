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
HEIGHT: Final = 240
_LEFT: Final = 44
_BOTTOM: Final = 24
_TOP: Final = 8


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
    """An axis label at ``position`` (x for periods, y for counts)."""

    position: float
    text: str


@dataclass(frozen=True)
class BarChart:
    """A downloads-per-period chart in a ``WIDTH`` x ``HEIGHT`` view box."""

    bars: tuple[Bar, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    plot_left: int = _LEFT
    plot_right: int = WIDTH
    baseline: int = HEIGHT - _BOTTOM


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
    plot_width = WIDTH - _LEFT
    plot_height = HEIGHT - _BOTTOM - _TOP
    slot = plot_width / max(len(points), 1)
    gap = min(slot * 0.2, 4.0)
    bars = []
    for index, (period, count) in enumerate(points):
        height = plot_height * count / top
        bars.append(Bar(x=_LEFT + index * slot + gap / 2, y=HEIGHT - _BOTTOM - height,
                        width=max(slot - gap, 1.0), height=height,
                        title=f"{period_label(period, interval)}: {count:,} downloads"))
    y_ticks = tuple(Tick(HEIGHT - _BOTTOM - plot_height * i / 4, compact(top * i // 4))
                    for i in range(5))
    every = max(1, -(-len(points) // 6))
    x_ticks = tuple(Tick(_LEFT + (index + 0.5) * slot, period_label(period, interval))
                    for index, (period, _) in enumerate(points) if index % every == 0)
    return BarChart(tuple(bars), y_ticks, x_ticks)


def sparkline(counts: Sequence[int], width: int = 120, height: int = 32) -> str:
    """SVG polyline points for ``counts`` (oldest first) in a ``width`` x ``height`` box."""
    if not counts:
        return ""
    peak = max(max(counts), 1)
    step = width / max(len(counts) - 1, 1)
    return " ".join(f"{index * step:.1f},{height - 2 - (height - 4) * count / peak:.1f}"
                    for index, count in enumerate(counts))
