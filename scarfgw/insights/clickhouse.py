"""The ClickHouse engine: the queries of :mod:`scarfgw.insights.engine` against the table
the ``http`` sink fills (``etc/clickhouse.sql``), over ClickHouse's HTTP interface.

Blocking (urllib), called from the insights threads. The table is a ReplacingMergeTree
keyed on the request id, read with ``FINAL``, so a batch the sink sent twice counts once.
ClickHouse 18.16 (Debian bookworm) has no window functions: a download session is found
in arrays sorted per group (``arrayDifference`` of the times), see :mod:`counting`.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import date
from typing import Any, Final

import orjson

from scarfgw.insights import counting
from scarfgw.insights.engine import Engine
from scarfgw.insights.settings import ClickHouseConfig

DIALECT: Final = counting.Dialect(
    seconds="toInt64(time)",
    millis="toInt64(time) * 1000",
    day="toDate(toDateTime({ts}))",
    periods={"day": "{day}", "week": "toMonday({day})", "month": "toStartOfMonth({day})",
             "year": "toStartOfYear({day})"},
    quote=lambda text: "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'",
)
_FIELDS: Final = ("ts", "digest", "request_id", *(name for name, _ in counting.ATTRIBUTES))


class ClickHouseError(Exception):
    """ClickHouse refused a query or could not be reached."""


def _sessions(candidates: str, groups: str, digest: int, since: int) -> str:
    """Session starts among the candidates of ``digest`` (1: docker digests, which join any
    request of their group; 0: the others, grouped by version too)."""
    window = counting.WINDOW_SECONDS
    events = "(" + ", ".join(_FIELDS) + ")"
    picks = ", ".join(f"e.{index + 1} AS {name}" for index, name in enumerate(_FIELDS)
                      if name not in ("digest", "request_id"))
    return (
        f"SELECT pkg, {picks} FROM ("
        f"SELECT pkg, arraySort(x -> (x.1, x.2, x.3), groupArray({events})) AS evs,"
        f" arrayFilter((x, gap, i) -> ifNull(x.2, 0) = {digest} AND (i = 1 OR gap > {window}),"
        f" evs, arrayDifference(arrayMap(x -> x.1, evs)), arrayEnumerate(evs)) AS starts"
        f" FROM ({candidates}) GROUP BY {groups}) ARRAY JOIN starts AS e"
        f" WHERE e.1 >= {since}"
    )


class ClickHouseStore(Engine):
    """Queries the events table of ``config`` (several gateway instances write to it)."""

    dialect = DIALECT

    def __init__(self, config: ClickHouseConfig) -> None:
        self.config = config
        self.table = f"{config.database}.{config.table}"

    def _post(self, sql: str) -> Any:
        request = urllib.request.Request(
            self.config.url + "/?" + urllib.parse.urlencode({"database": self.config.database}),
            data=sql.encode("utf-8"), headers=dict(self.config.headers), method="POST")
        try:
            return urllib.request.urlopen(request, timeout=self.config.timeout)
        except urllib.error.HTTPError as error:
            detail = error.read(300).decode("utf-8", "replace").strip()
            raise ClickHouseError(f"ClickHouse answered {error.code}: {detail}") from None
        except OSError as error:
            raise ClickHouseError(f"cannot reach ClickHouse at {self.config.url}: {error}"
                                  ) from None

    def _from_table(self, sql: str) -> str:
        return sql.replace(" FROM events", f" FROM {self.table} FINAL")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (as JSON values: numbers, strings, dates as text)."""
        with self._post(self._from_table(sql) + " FORMAT JSONCompact") as response:
            document = orjson.loads(response.read())
        return [tuple(row) for row in document["data"]]

    def starts(self, where: str, since: int) -> str:
        """The downloads: digests per session group, the others per group and version."""
        candidates = counting.candidates_sql(DIALECT, where)
        session = "pkg, subject, net, rt"
        return (f"{_sessions(candidates, session, 1, since)} UNION ALL "
                f"{_sessions(candidates, session + ', vkey', 0, since)}")

    def event_rows(self, package_id: str, start: date, end: date,
                   batch: int) -> Iterator[list[dict[str, Any]]]:
        """The package's events in the range, read from one streamed answer."""
        sql = self._from_table(self.events_sql(package_id, start, end))
        with self._post(sql + " FORMAT JSONEachRow") as response:
            rows: list[dict[str, Any]] = []
            for line in response:
                rows.append(orjson.loads(line))
                if len(rows) == batch:
                    yield rows
                    rows = []
            if rows:
                yield rows

    def close(self) -> None:
        """Nothing to release (one connection per query)."""
