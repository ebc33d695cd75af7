"""An in-memory insights Reader for the badge and dashboard tests (the engines have their own
tests against real DuckDB and ClickHouse)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from twisted.internet import defer

from scarfgw.insights.model import Breakdown, CompanyRow, Interval, Package, SeriesPoint
from scarfgw.insights.view_range import period_start


class NoEvents:
    """The raw-event export, which the badges and the dashboard never use."""

    def next_page(self) -> defer.Deferred[bytes]:
        return defer.succeed(b"")

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)


@dataclass(frozen=True)
class Download:
    """One counted download and what it is broken down by."""

    package: str
    day: date
    version: str = "1.0"
    client: str = "pip"
    country: str = "DE"
    company: str | None = None
    domain: str = "get.example.test"
    network: str = "203.0.113.0/24"


@dataclass
class MemoryReader:
    """Answers the Reader queries from a list of downloads; counts the queries it answers."""

    catalogue: Sequence[Package]
    downloads_: list[Download] = field(default_factory=list)
    queries: int = 0
    fail: bool = False

    def packages(self) -> Sequence[Package]:
        return self.catalogue

    def _in(self, start: date, end: date, package_id: str | None = None) -> list[Download]:
        self.queries += 1
        return [d for d in self.downloads_ if start <= d.day <= end
                and (package_id is None or d.package == package_id)]

    def _answer(self, value):
        return defer.fail(RuntimeError("engine down")) if self.fail else defer.succeed(value)

    def downloads(self, package_id: str, start: date, end: date, interval: Interval,
                  by: Breakdown | None) -> defer.Deferred[list[SeriesPoint]]:
        counts: dict[tuple[date, str | None], int] = defaultdict(int)
        networks: dict[tuple[date, str | None], set[tuple[date, str]]] = defaultdict(set)
        for d in self._in(start, end, package_id):
            key = (period_start(d.day, interval), None if by is None else getattr(d, by))
            counts[key] += 1
            networks[key].add((d.day, d.network))
        return self._answer([SeriesPoint(p, k, n, len(networks[p, k]))
                             for (p, k), n in sorted(counts.items(), key=str)])

    def companies(self, package_id: str, start: date, end: date
                  ) -> defer.Deferred[list[CompanyRow]]:
        rows: dict[str, list[Download]] = defaultdict(list)
        for d in self._in(start, end, package_id):
            if d.company is not None:
                rows[d.company].append(d)
        answer = [CompanyRow(name, len(ds), len({d.network for d in ds}),
                             datetime.combine(min(d.day for d in ds), datetime.min.time()),
                             datetime.combine(max(d.day for d in ds), datetime.min.time()))
                  for name, ds in rows.items()]
        return self._answer(sorted(answer, key=lambda r: (-r.downloads, r.company)))

    def totals(self, start: date, end: date) -> defer.Deferred[dict[str, int]]:
        counts: dict[str, int] = defaultdict(int)
        for d in self._in(start, end):
            counts[d.package] += 1
        return self._answer(dict(counts))

    def events(self, package_id: str, start: date, end: date) -> NoEvents:
        return NoEvents()

    def company_counts(self, start: date, end: date) -> defer.Deferred[dict[str, int]]:
        companies: dict[str, set[str]] = defaultdict(set)
        for d in self._in(start, end):
            if d.company is not None:
                companies[d.package].add(d.company)
        return self._answer({p: len(c) for p, c in companies.items()})


def sample_downloads(today: date) -> list[Download]:
    """Ninety days of plausible downloads of two packages (deterministic)."""
    found = []
    versions = ["2.1.0", "2.0.3", "1.9.9", "<b>1.0</b>"]
    clients = ["pip", "uv", "docker", "containerd", "curl"]
    countries = ["US", "DE", "FR", "IN", "BR", "JP"]
    companies = [None, None, "Acme Corp", "Globex", "<script>alert(1)</script> Ltd",
                 "Initech", None, "Umbrella"]
    for back in range(90):
        day = today - timedelta(days=back)
        for n in range(8 + (back * 7) % 13 + (90 - back) // 6):
            found.append(Download(
                "pkg-hello", day, versions[(n + back // 20) % 4], clients[n % 5],
                countries[(n * 7 + back) % 6], companies[(n + back) % 8],
                "get.example.test" if n % 3 else "cr.example.test",
                f"203.0.{(n * 31 + back) % 200}.0/24"))
        if back % 3 == 0:
            found.append(Download("pkg-other", day, "0.1", "npm"))
    return found
