"""The JSONL follower into a real DuckDB file: restarts, rotation, truncation, partial and
corrupt lines, replays, and a file larger than one chunk."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from scarfgw.insights.embedded import DuckDBStore
from scarfgw.insights.engine import EVENT_COLUMNS
from scarfgw.insights.follow import Follower

DAY = date(2026, 11, 22)
DAY_NOON = 1795348800.0
"""Noon of DAY (epoch seconds): a store's clock for which DAY is not settled yet."""


def event(number: int, second: int = 0, **extra: Any) -> bytes:
    """A python file download at 10:00:``second`` from its own network."""
    network = f"10.{number // 256 % 256}.{number % 256}.0/24"
    record = {"time": f"2026-11-22T10:{second // 60:02d}:{second % 60:02d}.000Z",
              "request_id": f"r{number}", "domain": "pypi.test", "method": "GET",
              "path": "/simple/six/six.whl", "status": 307, "user_agent": "pip/23.2.1",
              "referer": None, "origin": {"network": network},
              "client": {"runtime": "pip", "version": "23.2.1"}, "kind": "python",
              "package": "six", "version": "1.16.0", "file": "six.whl", "target": None}
    record.update(extra)
    return json.dumps(record).encode() + b"\n"


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def append(path: Path, data: bytes) -> None:
    """What a sink's write does: append at the end."""
    with path.open("ab") as handle:
        handle.write(data)


def stored(store: DuckDBStore) -> int:
    return int(store.query("SELECT count(*) FROM events")[0][0])


def drain(follower: Follower) -> tuple[int, int]:
    added = skipped = 0
    while True:
        result = follower.step()
        added, skipped = added + result.added, skipped + result.skipped
        if not result.more:
            return added, skipped


def downloads(store: DuckDBStore) -> int:
    return sum(p.downloads for p in store.downloads("six", DAY, DAY, "day", None))


def test_partial_line_waits_and_restart_resumes_at_the_stored_offset(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line = event(1)
    path.write_bytes(event(0) + line[:40])
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    assert drain(Follower(store, [str(path)])) == (1, 0)
    append(path, line[40:] + event(2))
    store.close()
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    follower = Follower(store, [str(path)])
    assert drain(follower) == (2, 0)
    assert drain(follower) == (0, 0)
    assert stored(store) == 3 and downloads(store) == 3


def test_corrupt_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(0) + b'{"time": "2026-11-22T10:0\n' + b"[1, 2]\n" + b"\xff\xfe\n"
                     + b'{"request_id": "no time"}\n' + b"\n" + event(1))  # a blank: no line
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    assert drain(Follower(store, [str(path)])) == (2, 4)


def test_a_replayed_batch_never_counts_twice(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    batch = event(0) + event(1, 1) + event(1, 1, status=200)
    path.write_bytes(batch + batch)  # the sink re-sent a batch whose answer was lost
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    follower = Follower(store, [str(path)], chunk_bytes=len(batch) + 10)
    assert drain(follower) == (3, 0)
    append(path, batch)
    assert drain(follower) == (0, 0)
    assert stored(store) == 3


def test_a_batch_repeated_within_one_chunk_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    batch = event(0) + event(1, 1) + event(1, 1, status=200)
    path.write_bytes(batch + event(2) + batch)
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    assert drain(Follower(store, [str(path)])) == (4, 0)
    assert stored(store) == 4


def test_rotation_finishes_the_old_file_then_reads_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(0))
    clock = Clock()
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    follower = Follower(store, [str(path)], rotation_grace=5, clock=clock)
    assert drain(follower) == (1, 0)
    os.rename(path, str(path) + ".1")  # logrotate, then kill -USR1
    append(Path(str(path) + ".1"), event(1))  # a worker that has not reopened yet
    path.write_bytes(event(2))
    assert drain(follower) == (1, 0)  # the old file's tail; the new one waits for the grace
    clock.now = 10
    assert drain(follower) == (1, 0)
    append(path, event(3))
    assert drain(follower) == (1, 0)
    assert stored(store) == 4


def test_restart_after_rotation_reads_the_rotated_rest_first(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(0))
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    assert drain(Follower(store, [str(path)])) == (1, 0)
    store.close()
    append(path, event(1))  # written while insights was down
    os.rename(path, str(path) + ".1")
    path.write_bytes(event(2))
    clock = Clock()
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    follower = Follower(store, [str(path)], rotation_grace=5, clock=clock)
    assert drain(follower) == (1, 0)
    clock.now = 10
    assert drain(follower) == (1, 0)
    assert stored(store) == 3


def test_truncation_starts_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(0) + event(1))
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    follower = Follower(store, [str(path)])
    assert drain(follower) == (2, 0)
    with path.open("r+b") as handle:  # copytruncate
        handle.truncate(0)
    append(path, event(2))
    assert drain(follower) == (1, 0)
    assert stored(store) == 3


def test_a_file_larger_than_a_chunk_goes_in_chunk_by_chunk(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(event(number, number % 3000) for number in range(5000)))
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    follower = Follower(store, [str(path)], chunk_bytes=64 * 1024)
    first = follower.step()
    assert first.more and 0 < first.added < 5000
    size = path.stat().st_size
    assert first.unread == size - store.position(str(path)).offset  # type: ignore[union-attr]
    assert 0 < first.unread < size - 60 * 1024, "the lag the metric reports"
    assert drain(follower) == (5000 - first.added, 0)
    assert follower.step().unread == 0
    assert downloads(store) == 5000
    assert store.position(str(path)).offset == path.stat().st_size  # type: ignore[union-attr]


def test_recent_events_become_a_sorted_run_with_the_same_answers_and_replay_check(
        tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    batch = b"".join(event(number, number * 7 % 3600, package=f"p{number % 3}")
                     for number in range(600))
    path.write_bytes(batch)
    unsorted = DuckDBStore(str(tmp_path / "unsorted.duckdb"))
    drain(Follower(unsorted, [str(path)]))
    assert unsorted.query("SELECT count(*) FROM events_sorted") == [(0,)]
    store = DuckDBStore(str(tmp_path / "i.duckdb"), run_events=350, clock=lambda: DAY_NOON)
    follower = Follower(store, [str(path)], chunk_bytes=len(batch) // 3 + 100)
    steps = [follower.step() for _ in range(4)]
    assert [(step.added, step.sorted, step.more) for step in steps] == [
        (200, 0, True), (200, 0, True), (200, 350, True), (0, 0, False)]
    packages = [row[0] for row in store.query("SELECT pkg FROM events_sorted ORDER BY rowid")]
    assert len(packages) == 350 and packages == sorted(packages)
    assert store.query("SELECT count(*) FROM events_recent") == [(250,)]
    for number in range(3):
        answer = store.downloads(f"p{number}", DAY, DAY, "week", "client")
        assert answer == unsorted.downloads(f"p{number}", DAY, DAY, "week", "client")
    assert sum(p.downloads for p in store.downloads("p0", DAY, DAY, "day", None)) == 200
    append(path, batch + event(9999, 10))  # a replay, and one new event, after the run
    assert drain(follower) == (1, 0)
    assert stored(store) == 601


def test_a_backlog_is_stored_as_read_then_sorted_into_runs(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    batch = b"".join(event(number, number % 3600, package=f"p{number % 5}")
                     for number in range(1000))
    path.write_bytes(batch + b"[corrupt]\n")
    store = DuckDBStore(str(tmp_path / "i.duckdb"), threads=1, catch_up_threads=2,
                        run_events=400)
    follower = Follower(store, [str(path)], chunk_bytes=len(batch) + 100,
                        piece_bytes=len(batch) // 4)  # one chunk of five staged files
    first = follower.step()
    assert (first.added, first.skipped, first.unread, first.sorted) == (1000, 1, 0, 400)
    assert store.query("SELECT current_setting('threads')") == [(2,)]
    assert drain(follower) == (0, 0)
    runs = [row[0] for row in store.query("SELECT pkg FROM events_sorted ORDER BY rowid")]
    assert len(runs) == 800 and runs[:400] == sorted(runs[:400])
    assert runs[400:] == sorted(runs[400:]) and runs != sorted(runs)
    assert store.query("SELECT count(*) FROM events_recent") == [(200,)]
    assert stored(store) == 1000 and sum(
        point.downloads for number in range(5)
        for point in store.downloads(f"p{number}", DAY, DAY, "day", None)) == 1000
    append(path, event(1000))  # following again: one file, one thread, the recent events
    assert drain(follower) == (1, 0)
    assert store.query("SELECT count(*) FROM events_recent") == [(201,)]
    assert store.query("SELECT current_setting('threads')") == [(1,)]


FIELDS = list(dict.fromkeys(column.split(".")[0] for column in EVENT_COLUMNS))
NESTED = {name: [c.split(".")[1] for c in EVENT_COLUMNS if c.startswith(f"{name}.")]
          for name in FIELDS}
AS_TEXT = "{" + ", ".join(
    f"'{name}': 'STRUCT({', '.join(f'{key} VARCHAR' for key in NESTED[name])})'"
    if NESTED[name] else f"'{name}': 'VARCHAR'" for name in FIELDS) + "}"
"""Every field of an event as text, as the first release read them."""


@pytest.mark.parametrize("single_table", [True, False])
def test_a_store_of_an_earlier_release_keeps_its_events_and_replay_check(
        tmp_path: Path, single_table: bool) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(0) + event(1, 1))
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    assert drain(Follower(store, [str(path)])) == (2, 0)
    store.close()
    table = "events" if single_table else "events_recent"
    with duckdb.connect(str(tmp_path / "i.duckdb")) as connection:  # as earlier releases
        if single_table:  # the first release: one table
            connection.execute("DROP VIEW events; DROP TABLE events_sorted;"
                               " ALTER TABLE events_recent RENAME TO events")
        else:  # the previous release: its view over both tables shows the hash too
            connection.execute("DROP VIEW events;"
                               " ALTER TABLE events_sorted ADD COLUMN line_hash UBIGINT")
        connection.execute(  # which hashed each field as the line's text says it
            f"ALTER TABLE {table} ADD COLUMN line_hash UBIGINT;"
            f" UPDATE {table} SET line_hash = raw.h FROM (SELECT request_id AS id, hash("
            f"{', '.join(FIELDS)}) AS h FROM read_json('{path}', format='newline_delimited', "
            f"columns={AS_TEXT})) AS raw WHERE {table}.request_id = raw.id")
        connection.execute(f"ALTER TABLE {table} ALTER time SET NOT NULL;"
                           f" ALTER TABLE {table} ALTER request_id SET NOT NULL")
        if not single_table:
            connection.execute("CREATE VIEW events AS SELECT * FROM events_sorted"
                               " UNION ALL SELECT * FROM events_recent")
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    append(path, event(2, 2) + event(0) + b'{"request_id": "no time"}\n')  # new, replayed, bad
    assert drain(Follower(store, [str(path)])) == (1, 1)
    assert stored(store) == 3 and downloads(store) == 3
    assert not store.query("SELECT * FROM information_schema.columns"
                           " WHERE column_name = 'line_hash'")


def test_a_store_on_another_filesystem_than_the_events_still_stages_them(
        tmp_path: Path, monkeypatch: Any) -> None:
    """copy_file_range refuses to cross filesystems (EXDEV: a sink on a volume, the store on
    tmpfs); the lines are then copied through memory."""
    def cross_device(*args: Any) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", cross_device)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(event(n, n) for n in range(5)))
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    assert drain(Follower(store, [str(path)])) == (5, 0)
    assert stored(store) == 5
    store.close()
    assert not (tmp_path / "i.duckdb.staging").exists()


def test_an_interrupted_step_stores_nothing_and_the_next_start_reads_the_chunk_again(
        tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(event(n, n % 3600) for n in range(20_000)))
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    follower = Follower(store, [str(path)])
    running = threading.Thread(target=store.interrupt)
    running.start()  # from another thread, as the reactor's shutdown does
    running.join()
    with pytest.raises(duckdb.InterruptException):
        follower.step()
    with pytest.raises(duckdb.InterruptException):
        store.query("SELECT 1")  # queries too, once interrupted
    store.close()
    assert not (tmp_path / "i.duckdb.staging").exists()
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    assert stored(store) == 0 and store.position(str(path)) is None
    assert drain(Follower(store, [str(path)])) == (20_000, 0)


def test_interrupting_the_store_stops_a_running_query(tmp_path: Path) -> None:
    store = DuckDBStore(str(tmp_path / "i.duckdb"))
    failed: list[BaseException] = []

    def query() -> None:
        try:
            store.query("SELECT count(*) FROM range(100000000000) AS t(i) WHERE i % 7 = 3")
        except duckdb.Error as exc:
            failed.append(exc)

    running = threading.Thread(target=query, daemon=True)
    running.start()
    time.sleep(0.2)
    deadline = time.monotonic() + 10
    while running.is_alive() and time.monotonic() < deadline:
        store.interrupt()  # again and again, as the shutdown does
        running.join(0.1)
    assert not running.is_alive()
    assert [type(exc) for exc in failed] == [duckdb.InterruptException]


def test_a_failing_sort_keeps_the_step_and_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(event(n, n % 3600) for n in range(30)))
    store = DuckDBStore(str(tmp_path / "i.duckdb"), run_events=20)
    follower = Follower(store, [str(path)])
    sort_recent = store.sort_recent

    def out_of_room() -> int:
        raise duckdb.OutOfMemoryException("could not allocate the sort")

    monkeypatch.setattr(store, "sort_recent", out_of_room)
    first = follower.step()
    assert (first.added, first.more, first.sorted) == (30, False, 0)
    assert first.sort_error is not None and "could not allocate" in first.sort_error
    assert stored(store) == 30
    monkeypatch.setattr(store, "sort_recent", sort_recent)
    assert follower.step().sorted == 20
