"""The :class:`~scarfgw.insights.model.Reader` over an engine: each query in a thread of
the insights pool, never on the reactor thread; the export comes in pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import Any, TypeVar, cast

import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from scarfgw.insights.engine import Engine, event_record
from scarfgw.insights.model import Breakdown, CompanyRow, Interval, Package, SeriesPoint

T = TypeVar("T")
EXPORT_BATCH = 1000
TOTALS_SECONDS = 60.0
"""How long the all-package totals (the package list, badges) are reused: they scan every
package's events of the range, the one query whose cost grows with the whole store."""
_TOTALS_KEPT = 64


class EventPages:
    """The NDJSON export of one query, a page (bytes, ``EXPORT_BATCH`` events) at a time;
    an empty page is the end. Fetch the pages one after the other."""

    def __init__(self, reader: ThreadedReader, rows: Iterator[list[dict[str, Any]]]) -> None:
        self._reader = reader
        self._rows = rows

    def next_page(self) -> Deferred[bytes]:
        """The next page of lines; ``b""`` at the end."""
        return self._reader.run(self._page)

    def close(self) -> Deferred[None]:
        """Release the query (before its end)."""
        rows = self._rows
        return self._reader.run(lambda: getattr(rows, "close", lambda: None)())

    def _page(self) -> bytes:
        batch = next(self._rows, [])
        return b"".join(orjson.dumps(event_record(row)) + b"\n" for row in batch)


class ThreadedReader:
    """Answers the Reader protocol from ``engine`` in ``pool`` (started and stopped by its
    owner); the all-package totals of a range are kept for :data:`TOTALS_SECONDS`."""

    def __init__(self, engine: Engine, packages: Sequence[Package], pool: ThreadPool,
                 reactor: Any) -> None:
        self.engine = engine
        self._packages = tuple(packages)
        self._pool = pool
        self._reactor = reactor
        self._totals: dict[tuple[date, date], tuple[float, dict[str, tuple[int, int]]]] = {}

    def run(self, work: Callable[[], T]) -> Deferred[T]:
        """``work()`` in the pool."""
        return cast(Deferred[T], deferToThreadPool(
            cast(IReactorFromThreads, self._reactor), self._pool, work))

    def packages(self) -> Sequence[Package]:
        """Every configured package."""
        return self._packages

    def use_packages(self, packages: Sequence[Package]) -> None:
        """The packages of a reloaded config."""
        self._packages = tuple(packages)

    def downloads(self, package_id: str, start: date, end: date, interval: Interval,
                  by: Breakdown | None) -> Deferred[list[SeriesPoint]]:
        """The series of ``package_id``."""
        return self.run(lambda: self.engine.downloads(package_id, start, end, interval, by))

    def companies(self, package_id: str, start: date,
                  end: date) -> Deferred[list[CompanyRow]]:
        """The companies of ``package_id``."""
        return self.run(lambda: self.engine.companies(package_id, start, end))

    def _all_totals(self, start: date, end: date) -> Deferred[dict[str, tuple[int, int]]]:
        now = self._reactor.seconds()
        kept = self._totals.get((start, end))
        if kept is not None and now - kept[0] < TOTALS_SECONDS:
            return succeed(kept[1])

        def keep(totals: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
            if len(self._totals) >= _TOTALS_KEPT:
                self._totals.clear()
            self._totals[start, end] = (now, totals)
            return totals

        return self.run(lambda: self.engine.totals(start, end)).addCallback(keep)

    def totals(self, start: date, end: date) -> Deferred[dict[str, int]]:
        """Downloads per package id."""
        return self._all_totals(start, end).addCallback(
            lambda totals: {package: downloads for package, (downloads, _) in totals.items()})

    def company_counts(self, start: date, end: date) -> Deferred[dict[str, int]]:
        """Distinct companies per package id."""
        return self._all_totals(start, end).addCallback(
            lambda totals: {package: companies for package, (_, companies) in totals.items()
                            if companies})

    def events(self, package_id: str, start: date, end: date) -> EventPages:
        """The raw events of ``package_id`` as NDJSON pages."""
        return EventPages(self, self.engine.event_rows(package_id, start, end, EXPORT_BATCH))
