"""The embedded engine: one DuckDB file holding the events and how far each JSONL file was read.

Blocking; the primary calls it from threads only (see :mod:`scarfgw.insights.reader`). One
connection is opened per store; each thread works through its own cursor (DuckDB
connections must not be shared between threads; cursors of one connection may run at the
same time). Workers never open the file.

A chunk of complete JSONL lines goes in with the file's new offset in one transaction, so
a crash re-reads at most that chunk. DuckDB's own JSON reader parses it (about four times
faster than extracting fields line by line) straight into the table, in one statement,
only where the table does not hold them yet: same ``request_id`` and the same hash of the
stored fields (several events of one request differ there, or are the same to insights),
so a replayed or re-sent batch never counts twice. A first pass over two fields finds the
chunk's time span (the stored events the check looks at) and whether the chunk repeats a
request id itself (only then are its own repeats dropped, which costs a grouping). Lines
that are not JSON objects with a ``time`` and a ``request_id`` are skipped and counted.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import duckdb

from scarfgw.insights import counting
from scarfgw.insights.engine import EVENT_COLUMNS, Engine

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    pkg VARCHAR, time TIMESTAMP NOT NULL, request_id VARCHAR NOT NULL,
    line_hash UBIGINT NOT NULL,
    domain VARCHAR, method VARCHAR, path VARCHAR, status INTEGER, user_agent VARCHAR,
    referer VARCHAR, "origin.network" VARCHAR, "origin.country" VARCHAR, "origin.org" VARCHAR,
    "origin.type" VARCHAR, "client.runtime" VARCHAR, "client.version" VARCHAR, kind VARCHAR,
    package VARCHAR, image VARCHAR, reference VARCHAR, backend VARCHAR,
    auto_create_rule VARCHAR, object VARCHAR, version VARCHAR, file VARCHAR, target VARCHAR,
    "variables.version" VARCHAR, name VARCHAR, module VARCHAR, pixel_id VARCHAR,
    complete UTINYINT);
CREATE TABLE IF NOT EXISTS ingest_files (
    path VARCHAR PRIMARY KEY, device UBIGINT, inode UBIGINT, head VARCHAR, "offset" UBIGINT);
"""

_TEXT_FIELDS: Final = tuple(c for c in EVENT_COLUMNS if c not in ("time", "status", "complete"))
_NESTED: Final = {"origin": ("network", "country", "org", "type"),
                  "client": ("runtime", "version"), "variables": ("version",)}
_JSON_COLUMNS: Final = "{" + ", ".join(
    f"'{name}': 'STRUCT({', '.join(f'{key} VARCHAR' for key in _NESTED[name])})'"
    if name in _NESTED else f"'{name}': 'VARCHAR'"
    for name in dict.fromkeys(column.split(".")[0] for column in EVENT_COLUMNS)) + "}"
_READ: Final = ("read_json($file, format='newline_delimited', ignore_errors=true,"
                " maximum_object_size=16777216, columns={columns})")
_SURVEY: Final = (
    "SELECT count(*), count(DISTINCT request_id), min(time), max(time) FROM ("
    "SELECT TRY_CAST(time AS TIMESTAMP) AS time, request_id FROM "
    + _READ.format(columns="{'time': 'VARCHAR', 'request_id': 'VARCHAR'}")
    + ") WHERE time IS NOT NULL AND request_id IS NOT NULL")
_COLUMNS: Final = ", ".join(f'"{c}"' for c in ("time", "status", "complete", *_TEXT_FIELDS))
_PARSED: Final = f"""
SELECT TRY_CAST(time AS TIMESTAMP) AS time, TRY_CAST(status AS INTEGER) AS status,
       CAST(CASE complete WHEN 'false' THEN 0 WHEN 'true' THEN 1 END AS UTINYINT) AS complete,
       {", ".join(f'"{c}"' if "." not in c else f'{c} AS "{c}"' for c in _TEXT_FIELDS)},
       coalesce(package, auto_create_rule) AS pkg,
       hash({", ".join(dict.fromkeys(c.split(".")[0] for c in EVENT_COLUMNS))}) AS line_hash
FROM {_READ.format(columns=_JSON_COLUMNS)}
"""
_INSERT: Final = f"""
INSERT INTO events ({_COLUMNS}, pkg, line_hash)
SELECT $distinct{_COLUMNS}, pkg, line_hash FROM ({_PARSED}) AS s
WHERE time IS NOT NULL AND request_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM events AS e WHERE e.time BETWEEN $first AND $last
                  AND e.request_id = s.request_id AND e.line_hash = s.line_hash)
"""
_INSERT_NEW: Final = _INSERT.replace("$distinct", "")
_INSERT_DISTINCT: Final = _INSERT.replace("$distinct", "DISTINCT ON (request_id, line_hash) ")

DIALECT: Final = counting.Dialect(
    seconds="CAST(floor(epoch(time)) AS BIGINT)",
    millis="epoch_ms(date_trunc('second', time))",
    day="CAST(to_timestamp({ts}) AT TIME ZONE 'UTC' AS DATE)",
    periods={"day": "{day}", "week": "CAST(date_trunc('week', {day}) AS DATE)",
             "month": "CAST(date_trunc('month', {day}) AS DATE)",
             "year": "CAST(date_trunc('year', {day}) AS DATE)"},
    quote=lambda text: "'" + text.replace("'", "''") + "'",
    package="pkg",
)


@dataclass(frozen=True)
class FilePosition:
    """How far a followed file was read: its identity (device, inode, first line) and the
    offset after the last complete line stored."""

    device: int
    inode: int
    head: str
    offset: int


def _starts(where: str, since: int) -> str:
    """Downloads (session starts, see :mod:`counting`) of the candidates passing ``where``,
    from epoch second ``since`` on."""
    session = "pkg, subject, net, rt"
    return (
        f"SELECT {counting.starts_columns()} FROM ("
        f"SELECT *, lag(ts) OVER (PARTITION BY {session} ORDER BY ts, digest, request_id)"
        f" AS prev_any, lag(ts) OVER (PARTITION BY {session}, vkey"
        f" ORDER BY ts, digest, request_id) AS prev_same"
        f" FROM ({counting.candidates_sql(DIALECT, where)}) AS c) AS w"
        f" WHERE ts >= {since} AND ifnull(ts - CASE WHEN digest = 1 THEN prev_any"
        f" ELSE prev_same END, {counting.WINDOW_SECONDS + 1}) > {counting.WINDOW_SECONDS}"
    )


class DuckDBStore(Engine):
    """The events of this instance in a DuckDB file (created with its directory); DuckDB
    runs each statement on ``threads`` threads within ``memory_limit`` (spilling to disk
    beyond it; defaults: one thread per core, 80 % of the memory)."""

    dialect = DIALECT

    def __init__(self, path: str, *, read_only: bool = False, threads: int | None = None,
                 memory_limit: str | None = None) -> None:
        self.path = path
        if not read_only:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = (
            {"threads": threads} if threads else {})
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._connection = duckdb.connect(path, read_only=read_only, config=config)
        if not read_only:
            self._connection.execute(_SCHEMA)
        self._local = threading.local()
        self._chunk_dir = tempfile.mkdtemp(prefix="scarfgw-insights-") if not read_only else ""

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._connection.cursor()
        return cursor

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` through this thread's cursor."""
        return self._cursor().execute(sql).fetchall()

    def starts(self, where: str, since: int) -> str:
        """See :func:`_starts`."""
        return _starts(where, since)

    def position(self, path: str) -> FilePosition | None:
        """Where reading ``path`` stopped, or None for a file never read."""
        row = self._cursor().execute(
            'SELECT device, inode, head, "offset" FROM ingest_files WHERE path = ?', [path]
        ).fetchone()
        return FilePosition(*row) if row else None

    def ingest(self, path: str, position: FilePosition, lines: bytes) -> tuple[int, int]:
        """Store the complete lines ``lines`` of ``path`` and its new ``position`` at once;
        answer (events added, lines skipped as corrupt)."""
        chunk = os.path.join(self._chunk_dir, "chunk.jsonl")
        with open(chunk, "wb") as handle:
            handle.write(lines)
        cursor = self._cursor()
        try:
            cursor.execute("BEGIN")
            surveyed = cursor.execute(_SURVEY, {"file": chunk}).fetchone()
            valid, distinct, first, last = surveyed or (0, 0, None, None)
            insert = _INSERT_NEW if distinct == valid else _INSERT_DISTINCT
            inserted = cursor.execute(
                insert, {"file": chunk, "first": first, "last": last}).fetchone()
            cursor.execute(
                "INSERT OR REPLACE INTO ingest_files VALUES (?, ?, ?, ?, ?)",
                [path, position.device, position.inode, position.head, position.offset])
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        finally:
            os.unlink(chunk)
        return (int(inserted[0]) if inserted else 0), lines.count(b"\n") - int(valid)

    def compact(self) -> None:
        """Rewrite the events ordered by package and time: a package's rows then sit in a
        few row groups, which a query finds by their min/max without reading the rest
        (events arrive in time order, every package in every row group)."""
        cursor = self._cursor()
        cursor.execute("BEGIN")
        try:
            cursor.execute("CREATE TABLE events_sorted AS SELECT * FROM events "
                           "ORDER BY pkg, time")
            cursor.execute("DROP TABLE events")
            cursor.execute("ALTER TABLE events_sorted RENAME TO events")
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("CHECKPOINT")

    def event_rows(self, package_id: str, start: date, end: date,
                   batch: int) -> Iterator[list[dict[str, Any]]]:
        """The package's events in the range, oldest first, ``batch`` at a time."""
        cursor = self._connection.cursor()
        try:
            cursor.execute(self.events_sql(package_id, start, end))
            names = [column[0] for column in cursor.description or ()]
            while rows := cursor.fetchmany(batch):
                yield [dict(zip(names, row, strict=True)) for row in rows]
        finally:
            cursor.close()

    def close(self) -> None:
        """Close the connection (and the chunk directory)."""
        self._connection.close()
        if self._chunk_dir:
            os.rmdir(self._chunk_dir)

