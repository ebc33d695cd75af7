"""The embedded engine: one DuckDB file holding the events and how far each JSONL file was read.

Blocking; the primary calls it from threads only (see :mod:`scarfgw.insights.reader`). One
connection is opened per store; each thread works through its own cursor (DuckDB
connections must not be shared between threads; cursors of one connection may run at the
same time). Workers never open the file.

A chunk of complete JSONL lines, staged as files of at most :data:`PIECE_BYTES` (DuckDB
parses several files at once, one per thread), goes in with the file's new offset in one
transaction, so a crash re-reads at most that chunk. DuckDB's own JSON reader parses it
(about four times faster than extracting fields line by line) straight into the recent
events, a row a line: strictly, and only a chunk with a line that is no JSON object (rare:
a crash's torn line) again, tolerantly (such a line makes a row of nulls). Within the same
transaction the rows that must not stay are deleted by row id: lines without a ``time`` or
a ``request_id`` (skipped and counted), a chunk's own repeats of an event, and events the
store held before: the same ``request_id`` and the same stored fields (several events of
one request differ there, or are the same to insights) among the stored events of the
chunk's time span, so a replayed or re-sent batch never counts twice.

The events live in two tables behind the view ``events``: ``events_recent``, in arrival
order, and ``events_sorted``, runs of events each sorted by package and time, so that a
package's rows of a run sit in one or two row groups, which a query finds by their min/max
without reading the rest (a query reads all the recent events). A chunk goes into the
recent events as it comes, never sorted on the way in: a backlog is durable and queryable
as fast as DuckDB parses and writes it. Once nothing is waiting to be read,
:meth:`DuckDBStore.sort_recent` moves the oldest :data:`RUN_EVENTS` recent events into a
new sorted run per call (one transaction of whole row groups, which leaves the checkpoint
nothing to rewrite), until fewer are left: an event is written at most twice and never
sorted again. Once no run is left to sort, :meth:`DuckDBStore.count_days` keeps the
downloads of each settled day per package and company (``day_totals``, the days in
``counted_days``; a day settles :data:`GRACE_SECONDS` after it ended, by the store's clock,
so an event dated in the future is never counted ahead); a chunk forgets those of the days
its events may change, in its own transaction, and :meth:`DuckDBStore.totals` counts only
the days not counted from their events. ``origin.network`` is stored uncompressed: nearly
every event has its own, and a query that reads a package's events from unsorted row groups
spent most of its time decompressing that column's dictionaries.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import duckdb

from scarfgw.insights import counting
from scarfgw.insights.engine import EVENT_COLUMNS, Engine

_EVENTS_TABLE: Final = """(
    pkg VARCHAR, time TIMESTAMP NOT NULL, request_id VARCHAR NOT NULL,
    domain VARCHAR, method VARCHAR, path VARCHAR, status INTEGER, user_agent VARCHAR,
    referer VARCHAR, "origin.network" VARCHAR USING COMPRESSION uncompressed,
    "origin.country" VARCHAR, "origin.org" VARCHAR,
    "origin.type" VARCHAR, "client.runtime" VARCHAR, "client.version" VARCHAR, kind VARCHAR,
    package VARCHAR, image VARCHAR, reference VARCHAR, backend VARCHAR,
    auto_create_rule VARCHAR, object VARCHAR, version VARCHAR, file VARCHAR, target VARCHAR,
    "variables.version" VARCHAR, name VARCHAR, module VARCHAR, pixel_id VARCHAR,
    complete UTINYINT)"""
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS events_sorted {_EVENTS_TABLE};
CREATE TABLE IF NOT EXISTS events_recent {_EVENTS_TABLE.replace(" NOT NULL", "")};
CREATE VIEW IF NOT EXISTS events AS
    SELECT * FROM events_sorted UNION ALL SELECT * FROM events_recent;
CREATE TABLE IF NOT EXISTS ingest_files (
    path VARCHAR PRIMARY KEY, device UBIGINT, inode UBIGINT, head VARCHAR, "offset" UBIGINT);
CREATE TABLE IF NOT EXISTS counted_days (day DATE NOT NULL);
CREATE TABLE IF NOT EXISTS day_totals (
    day DATE NOT NULL, pkg VARCHAR, company VARCHAR, downloads BIGINT NOT NULL);
"""
_SINGLE_TABLE: Final = (
    "SELECT 1 FROM information_schema.tables WHERE table_catalog = current_database()"
    " AND table_schema = 'main' AND table_name = 'events' AND table_type = 'BASE TABLE'")
"""A store of the first layout (one table ``events``, its columns as now): that table
becomes the sorted events."""
_STRICT_RECENT: Final = (
    "SELECT 1 FROM information_schema.columns WHERE table_catalog = current_database()"
    " AND table_schema = 'main' AND table_name = 'events_recent' AND column_name = 'time'"
    " AND is_nullable = 'NO'")
"""The recent events of a store from before this release, which took valid events only."""
_HASHED: Final = (
    "SELECT c.table_name FROM information_schema.columns AS c JOIN information_schema.tables"
    " AS t USING (table_catalog, table_schema, table_name) WHERE t.table_type = 'BASE TABLE'"
    " AND c.table_catalog = current_database() AND c.table_schema = 'main'"
    " AND c.column_name = 'line_hash'")
"""The tables of a store from before this release, which kept a hash of each event's fields
for the replay check (the check now compares the fields): the column is dropped."""
PIECE_BYTES: Final = 64 << 20
"""The most one staged file holds."""
RUN_EVENTS: Final = 1_000_000
"""The recent events are sorted into runs of this many, once they are at least that many."""

_NESTED: Final = {"origin": ("network", "country", "org", "type"),
                  "client": ("runtime", "version"), "variables": ("version",)}
_TYPED: Final = {"time": "TIMESTAMP", "status": "INTEGER", "complete": "BOOLEAN"}
"""The fields DuckDB's reader converts; the others are text."""
_JSON_COLUMNS: Final = "{" + ", ".join(
    f"'{name}': 'STRUCT({', '.join(f'{key} VARCHAR' for key in _NESTED[name])})'"
    if name in _NESTED else f"'{name}': '{_TYPED.get(name, 'VARCHAR')}'"
    for name in dict.fromkeys(column.split(".")[0] for column in EVENT_COLUMNS)) + "}"
_READ: Final = ("read_json($files, format='newline_delimited', ignore_errors=$tolerant,"
         f" maximum_object_size=16777216, columns={_JSON_COLUMNS})")
_STORED: Final = ("pkg", "time", "request_id", *EVENT_COLUMNS[2:])
"""The columns of the events tables, in their order."""
_DERIVED: Final = {"pkg": "coalesce(package, auto_create_rule)",
                   "complete": "CAST(complete AS UTINYINT)"}
"""Stored columns computed from the fields."""
_INSERT: Final = (
    "INSERT INTO events_recent BY NAME SELECT "
    + ", ".join(f'{_DERIVED.get(c, c if "." in c else f"{chr(34)}{c}{chr(34)}")} AS "{c}"'
                for c in _STORED)
    + f" FROM {_READ}")
"""Every line's row, valid or not (the recent events take rows without ``time`` or
``request_id`` within the transaction that removes them)."""
_VALID: Final = "time IS NOT NULL AND request_id IS NOT NULL"
_NEW: Final = "rowid >= $start"
"""The rows of this chunk (``$start``: the row id after the last one committed)."""
_NEXT_ROW: Final = "SELECT coalesce(max(rowid) + 1, 0) FROM events_recent"
_SURVEY: Final = (f"SELECT count(*), count(*) FILTER ({_VALID}), count(DISTINCT request_id)"
                  f" FILTER ({_VALID}), epoch_us(min(time) FILTER ({_VALID})),"
                  f" epoch_us(max(time) FILTER ({_VALID})) FROM events_recent WHERE {_NEW}")
"""The chunk's rows, valid rows, distinct request ids, and the time span of the valid rows
(the events it stores: the days its totals change) in epoch microseconds (a time Python's
datetime cannot hold, e.g. in the year 10000, stays a number)."""
_FIRST: Final = "make_timestamp($first)"
_LAST: Final = "make_timestamp($last)"
_INVALID: Final = f"DELETE FROM events_recent WHERE {_NEW} AND NOT ({_VALID})"
_SAME: Final = " AND ".join(
    ["e.request_id = s.request_id", "e.time = s.time",
     *(f'e."{c}" IS NOT DISTINCT FROM s."{c}"' for c in _STORED[3:])])
"""Two events ``e`` and ``s`` that are the same to insights."""
_REPEATED: Final = (
    "DELETE FROM events_recent WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number()"
    " OVER (PARTITION BY " + ", ".join(f'"{c}"' for c in _STORED[1:]) + ") AS copy"
    f" FROM events_recent WHERE {_NEW} AND request_id IN (SELECT request_id FROM"
    f" events_recent WHERE {_NEW} GROUP BY request_id HAVING count(*) > 1)) WHERE copy > 1)")
"""Removes the chunk's own repeats of an event but its first."""
_STORED_BEFORE: Final = (
    f"DELETE FROM events_recent AS s WHERE s.{_NEW} AND EXISTS (SELECT 1 FROM ("
    f"SELECT * FROM events_sorted WHERE time BETWEEN {_FIRST} AND {_LAST} UNION ALL"
    f" SELECT * FROM events_recent WHERE rowid < $start AND time BETWEEN {_FIRST} AND {_LAST})"
    f" AS e WHERE {_SAME})")
"""Removes the chunk's events that the store held before (a replay, a re-sent batch)."""
_UNCOUNT: Final = tuple(
    f"DELETE FROM {table} WHERE day BETWEEN CAST({_FIRST} AS DATE)"
    f" AND CAST({_LAST} + INTERVAL {counting.WINDOW_SECONDS} SECOND AS DATE)"
    for table in ("counted_days", "day_totals"))
"""Forget the day totals a chunk's events (``$first`` to ``$last``) may change: their days,
and the next day when they end within the window before it."""
_COUNTED_DAYS: Final = (
    "SELECT 1 FROM information_schema.tables WHERE table_catalog = current_database()"
    " AND table_schema = 'main' AND table_name = 'counted_days'")


def _days(first: str, last: str) -> str:
    """The days from the date ``first`` to the date ``last`` (none when either is NULL)."""
    return (f"SELECT CAST(unnest(generate_series(CAST({first} AS TIMESTAMP),"
            f" CAST({last} AS TIMESTAMP), INTERVAL 1 DAY)) AS DATE) AS day")


_UNCOUNTED: Final = (
    "WITH per_day AS (SELECT CAST(time AS DATE) AS day, count(*) AS n FROM events"
    " WHERE time < CAST($settled AS DATE) + 1 GROUP BY day)"
    f" SELECT day, coalesce(n, 0) FROM ({_days('(SELECT min(day) FROM per_day)', '$settled')})"
    " AS s LEFT JOIN per_day USING (day)"
    " WHERE day NOT IN (SELECT day FROM counted_days) ORDER BY day DESC")
"""The settled days (from the oldest event's day to ``$settled``) that are not counted,
newest first, with their events."""
_MISSING: Final = (
    "SELECT day FROM (" + _days(
        "greatest($start, (SELECT CAST(min(time) AS DATE) FROM events))",
        "least($end, (SELECT CAST(max(time) AS DATE) FROM events))")
    + ") AS d WHERE day NOT IN (SELECT day FROM counted_days) ORDER BY day")
"""The days of the range ``$start`` to ``$end`` that may have events (from the oldest
event's day to the newest's) and are not counted, oldest first."""
GRACE_SECONDS: Final = 3600
"""A day is settled (its totals are kept) this long after it ended: events are written when
a request finishes, so the previous day's keep arriving for a while after midnight."""
_OLDEST: Final = "SELECT count(*), min(rowid) FROM events_recent"
_TO_RUN: Final = ("INSERT INTO events_sorted BY NAME SELECT * FROM events_recent WHERE rowid < $end"
                  " ORDER BY pkg, time")

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


def _epoch_us(day: date) -> int:
    """The start of ``day`` (UTC) in epoch microseconds."""
    return (day - date(1970, 1, 1)).days * 86_400_000_000


def _runs(days: list[date]) -> list[tuple[date, date]]:
    """The first and last day of each run of consecutive ``days`` (sorted)."""
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and day == runs[-1][1] + timedelta(1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


_COPY_BLOCK: Final = 1 << 20
"""What a copy through memory (across filesystems) reads at a time."""
_NO_KERNEL_COPY: Final = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})


def _copy_range(source: int, target: int, length: int, offset: int, at: int) -> int:
    """Copy up to ``length`` bytes of ``source`` from ``offset`` into ``target`` at ``at``,
    in the kernel where it can (not across filesystems, e.g. a sink on a volume and the
    store elsewhere); answer how many."""
    try:
        return os.copy_file_range(source, target, length, offset, at)
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY:
            raise
    data = os.pread(source, min(length, _COPY_BLOCK), offset)
    written = 0
    while written < len(data):
        written += os.pwrite(target, data[written:], at + written)
    return len(data)


def _copy_piece(source: int, name: str, offset: int, length: int) -> None:
    """Copy ``length`` bytes of ``source`` from ``offset`` into the file ``name`` (over
    what it held)."""
    target = os.open(name, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        copied = 0
        while copied < length:
            done = _copy_range(source, target, length - copied, offset + copied, copied)
            if done == 0:
                raise OSError(f"{name}: the source ended while staging it")
            copied += done
        os.ftruncate(target, length)
    finally:
        os.close(target)


_Run = Callable[..., duckdb.DuckDBPyConnection]
"""Runs one statement (SQL, parameters) of the ingest thread."""


class DuckDBStore(Engine):
    """The events of this instance in a DuckDB file (created with its directory); DuckDB
    runs each statement on ``threads`` threads within ``memory_limit`` (spilling to disk
    beyond it; defaults: one thread per core, 80 % of the memory; every query that needs
    an order says so, which lets DuckDB parse and write in parallel), a chunk of several
    staged files (a backlog) and the sorting into runs of ``run_events`` on
    ``catch_up_threads`` (default: one per core); ``clock`` tells which days are settled
    (see :data:`GRACE_SECONDS`)."""

    dialect = DIALECT

    def __init__(self, path: str, *, read_only: bool = False, threads: int | None = None,
                 memory_limit: str | None = None, catch_up_threads: int | None = None,
                 run_events: int = RUN_EVENTS, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.run_events = run_events
        self.clock = clock
        """Now, in epoch seconds (the reactor's ``seconds``): which days are settled."""
        cores = os.cpu_count() or 1
        self._threads = self._threads_now = threads or cores
        self._catch_up_threads = catch_up_threads or cores
        if not read_only:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {
            "threads": self._threads, "preserve_insertion_order": False}
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._connection = duckdb.connect(path, read_only=read_only, config=config)
        if not read_only:
            self._migrate()
            self._connection.execute(_SCHEMA)
        self._local = threading.local()
        self._copier = ThreadPoolExecutor(cores, "insights-stage")
        """Copies the pieces of a chunk (the kernel does the work; the GIL is released)."""
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        """Every thread's cursor (for :meth:`interrupt`)."""
        self._writer: duckdb.DuckDBPyConnection | None = None
        self._interrupted = False
        self._uncounted = not read_only
        """Whether a settled day may lack its day totals (see :meth:`count_days`)."""
        self._settled_when_counted: date | None = None
        """The last settled day when every settled day was counted."""
        self._keeps_totals = read_only is False or bool(
            self._connection.execute(_COUNTED_DAYS).fetchall())
        """Whether the store keeps day totals (a store of an earlier release opened read-only
        does not: its totals are counted from the events)."""
        self._chunk_dir = ""
        if not read_only:
            self._chunk_dir = os.path.abspath(path) + ".staging"
            shutil.rmtree(self._chunk_dir, ignore_errors=True)  # pieces of a killed process
            os.makedirs(self._chunk_dir, mode=0o700)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._connection.cursor()
            self._cursors.append(cursor)
        return cursor

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` through this thread's cursor (refused once interrupted)."""
        self._refuse_once_interrupted()
        return self._cursor().execute(sql).fetchall()

    def _refuse_once_interrupted(self) -> None:
        if self._interrupted:
            raise duckdb.InterruptException("the insights store is closing")

    def starts(self, where: str, since: int) -> str:
        """See :func:`_starts`."""
        return _starts(where, since)

    def position(self, path: str) -> FilePosition | None:
        """Where reading ``path`` stopped, or None for a file never read."""
        row = self._cursor().execute(
            'SELECT device, inode, head, "offset" FROM ingest_files WHERE path = ?', [path]
        ).fetchone()
        return FilePosition(*row) if row else None

    def stage(self, source: int, pieces: list[tuple[int, int]]) -> list[str]:
        """Copy the ``pieces`` (offset, length) of the file descriptor ``source`` as files
        for DuckDB's reader, in the kernel, one thread per core; answer the files. They are
        kept and overwritten by the next chunk (closing the store removes them): writing over
        pages the kernel holds already costs about a third of creating and removing the
        files every chunk."""
        names = [os.path.join(self._chunk_dir, f"piece-{index}.jsonl")
                 for index in range(len(pieces))]
        for stale in sorted(set(os.listdir(self._chunk_dir)) - set(map(os.path.basename, names))):
            os.unlink(os.path.join(self._chunk_dir, stale))  # a longer chunk's last pieces
        copies = [self._copier.submit(_copy_piece, source, name, offset, length)
                  for name, (offset, length) in zip(names, pieces, strict=True)]
        wait(copies)  # all of them, so that none still writes once a failed step is retried
        for copy in copies:
            copy.result()
        return names

    def ingest(self, path: str, position: FilePosition, files: list[str]) -> tuple[int, int]:
        """Store the lines of ``path`` staged as ``files`` among the recent events and its
        new ``position`` at once; answer (events added, lines skipped as corrupt)."""
        run = self._statements(self._catch_up_threads if len(files) > 1 else self._threads)
        try:
            return self._store(run, path, position, files, tolerant=False)
        except duckdb.InterruptException:
            raise
        except duckdb.Error:  # a line that is no JSON object
            return self._store(run, path, position, files, tolerant=True)

    def _store(self, run: _Run, path: str, position: FilePosition, files: list[str], *,
               tolerant: bool) -> tuple[int, int]:
        """One chunk's transaction (see :meth:`ingest`): its rows go in as parsed, one a
        line (tolerantly, a line that is no JSON object makes a row of nulls), then the
        invalid ones, the repeats and the events stored before are removed."""
        with self._transaction(run):
            start = self._number(run(_NEXT_ROW))
            inserted = self._number(
                run(_INSERT.replace("$tolerant", str(tolerant).lower()), {"files": files}))
            surveyed = run(_SURVEY, {"start": start}).fetchone()
            parsed, valid, distinct, first, last = surveyed or (0, 0, 0, None, None)
            if parsed != inserted:  # the chunk's rows are those after the committed ones
                raise RuntimeError(f"DuckDB {duckdb.__version__} numbers the rows of a"
                                   " transaction otherwise: the insights store cannot ingest")
            if parsed != valid:
                run(_INVALID, {"start": start})
            removed = 0
            changes_settled = False
            if distinct != valid:
                removed += self._number(run(_REPEATED, {"start": start}))
            if valid:
                removed += self._number(run(_STORED_BEFORE,
                                           {"start": start, "first": first, "last": last}))
                for uncount in _UNCOUNT:
                    run(uncount, {"first": first, "last": last})
                changes_settled = first < _epoch_us(self._settled() + timedelta(1))
            run("INSERT OR REPLACE INTO ingest_files VALUES (?, ?, ?, ?, ?)",
                [path, position.device, position.inode, position.head, position.offset])
        if changes_settled:  # committed: a settled day may lack its totals now
            self._uncounted = True
        return int(valid) - removed, int(parsed) - int(valid)

    @staticmethod
    def _number(cursor: duckdb.DuckDBPyConnection) -> int:
        """The first value a statement answered (the rows an insert or delete changed), or
        0."""
        row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def sort_recent(self) -> int:
        """Move the oldest :attr:`run_events` recent events into a new sorted run, when
        there are at least that many (on the catch-up threads); answer how many moved."""
        oldest = self._cursor().execute(_OLDEST).fetchone()
        count, first = oldest or (0, None)
        if count < self.run_events or first is None:
            return 0
        run = self._statements(self._catch_up_threads)
        with self._transaction(run):
            moved = self._number(run(_TO_RUN, {"end": first + self.run_events}))
            run("DELETE FROM events_recent WHERE rowid < ?", [first + self.run_events])
        return moved

    def _settled(self) -> date:
        """The last settled day: the newest that ended :data:`GRACE_SECONDS` ago."""
        now = datetime.fromtimestamp(self.clock() - GRACE_SECONDS, UTC)
        return now.date() - timedelta(1)

    def count_days(self) -> int:
        """Count the downloads of settled days (see :meth:`_settled`, from the oldest
        event's day on) that are not counted yet, per day, package and company (see
        :func:`counting.day_totals_sql`), for :meth:`totals`: the newest such days in a row
        of about :attr:`run_events` events (at least one day), in one transaction on the
        catch-up threads; answer how many days. A chunk that stores events of a counted day
        (or of the window before the next one) makes it uncounted again; so does a day
        becoming settled."""
        settled = self._settled()
        if settled != self._settled_when_counted:
            self._uncounted = True
        if not self._uncounted:
            return 0
        days: list[date] = []
        events = 0
        for day, count in self._statements(self._threads)(
                _UNCOUNTED, {"settled": settled}).fetchall():
            if days and (events + count > self.run_events or day != days[-1] - timedelta(1)):
                break
            days.append(day)
            events += count
        if not days:
            self._uncounted = False
            self._settled_when_counted = settled
            return 0
        first, last = days[-1], days[0]
        run = self._statements(self._catch_up_threads)
        with self._transaction(run):
            run(f"INSERT INTO day_totals {self._day_totals_of(first, last)}")
            run("INSERT INTO counted_days SELECT unnest($days)", {"days": days})
        return len(days)

    def _total_rows(self, start: date, end: date) -> list[tuple[Any, ...]]:
        """The totals of the range from the day totals of its counted days and the
        downloads of each run of the others that may have events (from the oldest event's
        day to the newest's: usually the last day or two), in one snapshot."""
        if not self._keeps_totals:
            return super()._total_rows(start, end)
        self._refuse_once_interrupted()
        cursor = self._cursor()
        cursor.execute("BEGIN")
        try:
            bounds = {"start": start, "end": end}
            missing = [day for day, in cursor.execute(_MISSING, bounds).fetchall()]
            parts = ["SELECT pkg, company, downloads FROM day_totals"
                     " WHERE day BETWEEN $start AND $end"]
            parts.extend(f"SELECT pkg, company, downloads FROM ({self._day_totals_of(first, last)})"
                         " AS l" for first, last in _runs(missing))
            return cursor.execute(
                counting.summed_totals_sql(" UNION ALL ".join(parts)), bounds).fetchall()
        finally:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")  # a read: nothing to keep

    def _day_totals_of(self, first: date, last: date) -> str:
        """The day totals of the days ``first`` to ``last``, counted from their events."""
        return counting.day_totals_sql(self._downloads_of(first, last, None), DIALECT)

    def interrupt(self) -> None:
        """Stop what runs now, from any thread (before closing): the queries fail, and so
        does the ingest or sorting statement (or its next one); its transaction rolls back,
        and the chunk is read again at the next start. From then on the store refuses
        statements; one that had passed that check but not started when this was called
        runs on (DuckDB interrupts running statements only): call this again until the
        threads are idle."""
        self._interrupted = True
        for cursor in list(self._cursors):
            cursor.interrupt()

    def _statements(self, threads: int) -> _Run:
        """What runs the ingest thread's statements on ``threads`` DuckDB threads (each
        refused once :meth:`interrupt` was called)."""
        cursor = self._writer = self._cursor()
        self._use_threads(cursor, threads)

        def run(sql: str, parameters: object = None) -> duckdb.DuckDBPyConnection:
            self._refuse_once_interrupted()
            return cursor.execute(sql, parameters)

        return run

    @contextlib.contextmanager
    def _transaction(self, run: _Run) -> Iterator[None]:
        """The statements of the block in one transaction, rolled back if one fails (also
        once interrupted)."""
        run("BEGIN")
        try:
            yield
            run("COMMIT")
        except BaseException:
            if self._writer is not None:
                with contextlib.suppress(duckdb.Error):
                    self._writer.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        """Bring a store of an earlier release to this layout (see :data:`_SINGLE_TABLE`,
        :data:`_STRICT_RECENT`, :data:`_HASHED`)."""
        connection = self._connection
        connection.execute("BEGIN")  # all or nothing: a failed start leaves the store as it was
        try:
            if connection.execute(_SINGLE_TABLE).fetchone():
                connection.execute("ALTER TABLE events RENAME TO events_sorted")
            if connection.execute(_STRICT_RECENT).fetchone():
                for column in ("time", "request_id"):
                    connection.execute(f"ALTER TABLE events_recent ALTER {column} DROP NOT NULL")
            hashed = [row[0] for row in connection.execute(_HASHED).fetchall()]
            if hashed:
                connection.execute("DROP VIEW IF EXISTS events")
                for table in hashed:
                    connection.execute(f'ALTER TABLE "{table}" DROP COLUMN line_hash')
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _use_threads(self, cursor: duckdb.DuckDBPyConnection, threads: int) -> None:
        """DuckDB's threads for what follows (its workers start in the calling thread and
        share its CPU priority)."""
        if threads != self._threads_now:
            cursor.execute(f"SET threads = {threads}")
            self._threads_now = threads

    def event_rows(self, package_id: str, start: date, end: date,
                   batch: int) -> Iterator[list[dict[str, Any]]]:
        """The package's events in the range, oldest first, ``batch`` at a time."""
        self._refuse_once_interrupted()
        cursor = self._connection.cursor()
        self._cursors.append(cursor)
        try:
            cursor.execute(self.events_sql(package_id, start, end))
            names = [column[0] for column in cursor.description or ()]
            while rows := cursor.fetchmany(batch):
                yield [dict(zip(names, row, strict=True)) for row in rows]
        finally:
            self._cursors.remove(cursor)
            cursor.close()

    def close(self) -> None:
        """Close the connection (and remove the staging folder)."""
        self._copier.shutdown()
        self._connection.close()
        if self._chunk_dir:
            shutil.rmtree(self._chunk_dir, ignore_errors=True)

