"""What both engines answer, written once: the blocking queries behind the Reader.

An engine provides three things: its SQL :class:`~scarfgw.insights.counting.Dialect`,
``query(sql)`` (rows as tuples) and ``starts(where, since)`` (the download relation, see
:mod:`scarfgw.insights.counting`), plus ``event_rows`` for the export. Everything else, the
ranges, the series, the companies and the shape of an exported event, is here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from scarfgw.insights import counting
from scarfgw.insights.model import Breakdown, CompanyRow, Interval, SeriesPoint

EVENT_COLUMNS: Final = (
    "time", "request_id", "domain", "method", "path", "status", "user_agent", "referer",
    "origin.network", "origin.country", "origin.org", "origin.type", "client.runtime",
    "client.version", "kind", "package", "image", "reference", "backend", "auto_create_rule",
    "object", "version", "file", "target", "variables.version", "name", "module", "pixel_id",
    "complete",
)
"""The stored columns of an event, in the order of ``etc/clickhouse.sql``'s table."""

_COMMON: Final = frozenset({"time", "request_id", "domain", "method", "path", "status",
                            "user_agent", "referer", "kind", "package"})


def day_bounds(start: date, end: date) -> tuple[str, str]:
    """``[start 00:00, end + 1 day 00:00)`` as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    first = datetime.combine(start, time())
    after = datetime.combine(end + timedelta(days=1), time())
    return f"{first:%Y-%m-%d %H:%M:%S}", f"{after:%Y-%m-%d %H:%M:%S}"


def _epoch(day: date) -> int:
    return int(datetime.combine(day, time(), UTC).timestamp())


def event_record(row: dict[str, Any]) -> dict[str, Any]:
    """An exported event from a stored row (``millis``: its time): the common
    keys, ``origin`` and ``client`` as objects, and the kind's keys that are set."""
    millis = int(row["millis"])
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(millis // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        + f".{millis % 1000:03d}Z"}
    record.update((key, row[key]) for key in EVENT_COLUMNS[1:8])
    record["status"] = int(row["status"]) if row["status"] is not None else None
    record["origin"] = {key: row[f"origin.{key}"] for key in ("network", "country", "org", "type")}
    record["client"] = {key: row[f"client.{key}"] for key in ("runtime", "version")}
    record["kind"], record["package"] = row["kind"], row["package"]
    for key in EVENT_COLUMNS[14:]:
        value = row[key]
        if key not in _COMMON and value is not None:
            record[key] = value if key != "complete" else bool(value)
    return record


class Engine:
    """The shared queries; subclasses set :attr:`dialect` and implement the rest."""

    dialect: counting.Dialect

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql``."""
        raise NotImplementedError

    def starts(self, where: str, since: int) -> str:
        """The download relation of the candidates passing ``where``, from ``since`` on."""
        raise NotImplementedError

    def event_rows(self, package_id: str, start: date, end: date,
                   batch: int) -> Iterator[list[dict[str, Any]]]:
        """The rows of :meth:`events_sql`, ``batch`` at a time."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the engine's resources."""
        raise NotImplementedError

    def _range(self, start: date, end: date, package_id: str | None) -> str:
        """``where`` for candidates of the range (and package); the window before ``start``
        is included so that a session begun just before it is not counted again."""
        first = datetime.combine(start, time()) - timedelta(seconds=counting.WINDOW_SECONDS)
        _, after = day_bounds(start, end)
        where = f"time >= '{first:%Y-%m-%d %H:%M:%S}' AND time < '{after}'"
        if package_id is not None:
            where += f" AND {self.dialect.package} = {self.dialect.quote(package_id)}"
        return where

    def _downloads_of(self, start: date, end: date, package_id: str | None) -> str:
        return self.starts(self._range(start, end, package_id), _epoch(start))

    def downloads(self, package_id: str, start: date, end: date, interval: Interval,
                  by: Breakdown | None) -> list[SeriesPoint]:
        """The series of ``package_id``; see :meth:`scarfgw.insights.model.Reader.downloads`."""
        sql = counting.series_sql(self._downloads_of(start, end, package_id), self.dialect,
                                  interval, by)
        return [SeriesPoint(_as_date(period), None if by is None else str(key), int(n), int(u or 0))
                for period, key, n, u in self.query(sql)]

    def companies(self, package_id: str, start: date, end: date) -> list[CompanyRow]:
        """The companies that downloaded ``package_id``, most downloads first."""
        sql = counting.companies_sql(self._downloads_of(start, end, package_id))
        return [CompanyRow(str(company), int(n), int(u or 0), _as_time(first), _as_time(last))
                for company, n, u, first, last in self.query(sql)]

    def totals(self, start: date, end: date) -> dict[str, tuple[int, int]]:
        """(downloads, distinct companies) per package id with downloads in the range."""
        return {str(pkg): (int(n), int(c or 0)) for pkg, n, c in self._total_rows(start, end)}

    def _total_rows(self, start: date, end: date) -> list[tuple[Any, ...]]:
        """The rows of :func:`counting.totals_sql` for the range."""
        return self.query(counting.totals_sql(self._downloads_of(start, end, None)))

    def events_sql(self, package_id: str, start: date, end: date) -> str:
        """Every stored event of the package in the range, oldest first, its time as
        ``millis`` (epoch milliseconds)."""
        first, after = day_bounds(start, end)
        columns = ", ".join(f'"{column}"' for column in EVENT_COLUMNS[1:])
        return (
            f"SELECT {self.dialect.millis} AS millis, {columns} FROM events"
            f" WHERE {self.dialect.package} = {self.dialect.quote(package_id)}"
            f" AND time >= '{first}' AND time < '{after}' ORDER BY time, request_id"
        )


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _as_time(seconds: Any) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)
