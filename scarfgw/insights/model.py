"""What insights answers, whatever the engine: the types that the API, the badges, the
dashboard and ``scarfgw stats`` share, and the :class:`Reader` they all read through.

The engines (DuckDB, ClickHouse) answer blocking queries; the :class:`Reader` handed to the
web side runs them off the reactor thread and returns Deferreds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Protocol

from twisted.internet.defer import Deferred

Interval = Literal["day", "week", "month", "year"]
"""The length of one period of a series."""

Breakdown = Literal["version", "client", "country", "company", "domain", "type"]
"""What a series is split by; ``None`` where a series is a package's totals."""

INTERVALS: tuple[Interval, ...] = ("day", "week", "month", "year")
BREAKDOWNS: tuple[Breakdown, ...] = ("version", "client", "country", "company", "domain", "type")


@dataclass(frozen=True)
class Package:
    """A configured package: the rule's package id, its kind and a human label (image name,
    python package name, file template), on the domains that serve it."""

    id: str
    kind: str
    label: str
    domains: tuple[str, ...]


@dataclass(frozen=True)
class SeriesPoint:
    """Downloads of one period (its first day), for one breakdown ``key`` (None: totals).

    ``unique`` counts distinct origin networks per package per day, summed over the period's
    days."""

    period: date
    key: str | None
    downloads: int
    unique: int


@dataclass(frozen=True)
class CompanyRow:
    """One company's downloads of a package in a range."""

    company: str
    downloads: int
    unique: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True)
class Grant:
    """What one API token may read: every package (``*``) or the listed ids."""

    name: str
    packages: frozenset[str]

    def may_read(self, package_id: str) -> bool:
        """True when this grant covers ``package_id``."""
        return "*" in self.packages or package_id in self.packages


class Reader(Protocol):
    """The insights queries as the reactor side sees them (each runs off the reactor thread).

    Ranges are inclusive calendar days in UTC.
    """

    def packages(self) -> Sequence[Package]:
        """Every configured package, from the config (no query)."""

    def downloads(self, package_id: str, start: date, end: date, interval: Interval,
                  by: Breakdown | None) -> Deferred[list[SeriesPoint]]:
        """The series of ``package_id`` from ``start`` to ``end``."""

    def companies(self, package_id: str, start: date,
                  end: date) -> Deferred[list[CompanyRow]]:
        """The companies that downloaded ``package_id``, most downloads first."""

    def totals(self, start: date, end: date) -> Deferred[dict[str, int]]:
        """Downloads per package id in the range (packages without any are absent)."""

    def company_counts(self, start: date, end: date) -> Deferred[dict[str, int]]:
        """Distinct companies per package id in the range (packages without any are absent)."""

    def events(self, package_id: str, start: date, end: date) -> EventPages:
        """The raw events of ``package_id`` in the range as NDJSON, page by page."""


class EventPages(Protocol):
    """A running export: fetch :meth:`next_page` until it gives ``b""``, one at a time."""

    def next_page(self) -> Deferred[bytes]:
        """The next lines (whole events, each ending in a newline); ``b""`` at the end."""

    def close(self) -> Deferred[None]:
        """Stop early and release the query."""
