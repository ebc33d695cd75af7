"""EventWriter, Spool and the local sinks, on a fake clock with fake sinks (no real time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from scarfgw.analytics.sinks import HttpSink, JsonlSink, SinkError, build_sinks
from scarfgw.analytics.writer import EventWriter, Spool, serialise
from scarfgw.ops.metrics import REGISTRY


class FakeSink:
    """Records every attempt; fails while ``down`` or ``fail_times`` > 0; hangs if ``hang``."""

    def __init__(self, clock: Clock, name: str = "fake", fail_times: int = 0,
                 down: bool = False) -> None:
        self.name = name
        self.clock = clock
        self.fail_times = fail_times
        self.down = down
        self.hang = False
        self.attempts: list[float] = []
        self.batches: list[list[bytes]] = []
        self.hanging: list[Deferred[None]] = []
        self.reopened = 0
        self.closed = False

    def write(self, lines: list[bytes]) -> Deferred[None]:
        self.attempts.append(self.clock.seconds())
        if self.hang:
            d: Deferred[None] = Deferred()
            self.hanging.append(d)
            return d
        if self.down or self.fail_times > 0:
            self.fail_times -= 1
            return fail(SinkError("down"))
        self.batches.append(list(lines))
        return succeed(None)

    def reopen(self) -> None:
        self.reopened += 1

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)

    def numbers(self) -> list[int]:
        return [json.loads(line)["n"] for batch in self.batches for line in batch]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_writer(tmp_path: Path, sinks: list[FakeSink], clock: Clock, **options) -> EventWriter:
    settings: dict[str, Any] = {"batch_size": 3, "flush_interval": 1.0, "queue_limit": 6,
                "spool_max_bytes": 1 << 20, "retry_initial": 0.5, "retry_max": 8.0,
                "stop_timeout": 5.0}
    settings.update(options)
    writer = EventWriter(clock=clock, sinks=sinks, spool_dir=tmp_path / "spool", **settings)
    writer.startService()
    return writer


def submit_range(writer: EventWriter, start: int, stop: int) -> None:
    for n in range(start, stop):
        writer.submit({"n": n})


def spool_lines(tmp_path: Path, name: str = "fake") -> list[int]:
    files = sorted((tmp_path / "spool").glob(f"{name}.*.spool"))
    return [json.loads(line)["n"] for f in files for line in f.read_bytes().splitlines()]


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- batching --------------------------------------------------------------------------------


def test_batches_by_size(tmp_path, clock):
    sink = FakeSink(clock)
    writer = make_writer(tmp_path, [sink], clock)
    submit_range(writer, 0, 7)
    assert [len(b) for b in sink.batches] == [3, 3]
    clock.advance(1.0)
    assert [len(b) for b in sink.batches] == [3, 3, 1]
    assert sink.numbers() == list(range(7))


def test_batches_by_interval(tmp_path, clock):
    sink = FakeSink(clock)
    writer = make_writer(tmp_path, [sink], clock)
    writer.submit({"n": 0})
    clock.advance(0.999)
    assert sink.batches == []
    clock.advance(0.001)
    assert sink.numbers() == [0]
    assert clock.getDelayedCalls() == []


def test_written_and_queued_metrics(tmp_path, clock):
    sink = FakeSink(clock, name="metered")
    writer = make_writer(tmp_path, [sink], clock)
    queued = metric("scarfgw_events_queued_total")
    submit_range(writer, 0, 4)
    assert metric("scarfgw_events_queued_total") - queued == 4
    assert metric("scarfgw_events_written_total", sink="metered") == 3
    assert metric("scarfgw_events_queue_depth") == 1
    clock.advance(1.0)
    assert metric("scarfgw_events_written_total", sink="metered") == 4
    assert metric("scarfgw_events_queue_depth") == 0


def test_serialisation_compact_utf8_and_surrogates():
    assert serialise({"a": "é", "b": [1, None]}) == '{"a":"é","b":[1,null]}'.encode()
    assert serialise({"p": "/x\udcff"}) == b'{"p":"/x\\udcff"}'


def test_submit_never_raises_and_counts_unserialisable(tmp_path, clock):
    sink = FakeSink(clock)
    writer = make_writer(tmp_path, [sink], clock)
    dropped = metric("scarfgw_events_dropped_total", reason="unserialisable")
    writer.submit({"n": object()})
    writer.submit({"n": float("nan"), "bad": {1j}})
    assert metric("scarfgw_events_dropped_total", reason="unserialisable") - dropped == 2
    writer.submit({"n": 1})
    clock.advance(1.0)
    assert sink.numbers() == [1]


# --- failures, backoff, independence ---------------------------------------------------------


def test_retry_with_exponential_backoff(tmp_path, clock):
    sink = FakeSink(clock, fail_times=4)
    writer = make_writer(tmp_path, [sink], clock, retry_initial=0.5, retry_max=8.0)
    submit_range(writer, 0, 3)
    clock.pump([0.25] * 40)
    assert sink.attempts == [0.0, 0.5, 1.5, 3.5, 7.5]
    assert sink.numbers() == [0, 1, 2]


def test_backoff_is_capped_and_resets_after_success(tmp_path, clock):
    sink = FakeSink(clock, fail_times=5)
    writer = make_writer(tmp_path, [sink], clock, retry_initial=1.0, retry_max=3.0)
    submit_range(writer, 0, 3)
    clock.pump([1.0] * 15)
    assert sink.attempts == [0.0, 1.0, 3.0, 6.0, 9.0, 12.0]
    sink.fail_times = 1
    submit_range(writer, 3, 6)
    clock.advance(1.0)
    assert sink.attempts[-2:] == [15.0, 16.0]
    assert sink.numbers() == list(range(6))


def test_slow_sink_does_not_stall_another(tmp_path, clock):
    slow, fast = FakeSink(clock, name="slow"), FakeSink(clock, name="fast")
    slow.hang = True
    writer = make_writer(tmp_path, [slow, fast], clock)
    submit_range(writer, 0, 9)
    clock.advance(1.0)
    assert fast.numbers() == list(range(9))
    assert len(slow.attempts) == 1
    slow.hang = False
    slow.hanging[0].callback(None)
    assert len(slow.attempts) == 3 and len(slow.batches) == 2


def test_sink_raising_synchronously_is_a_failure(tmp_path, clock):
    sink = FakeSink(clock)
    calls = []

    def explode(lines):
        calls.append(lines)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return succeed(None)

    sink.write = explode  # type: ignore[method-assign]
    writer = make_writer(tmp_path, [sink], clock)
    submit_range(writer, 0, 3)
    clock.advance(0.5)
    assert len(calls) == 2


# --- spooling, replay, drops -----------------------------------------------------------------


def test_spools_past_queue_limit_and_replays_in_order(tmp_path, clock):
    sink = FakeSink(clock, down=True)
    writer = make_writer(tmp_path, [sink], clock)
    spooled = metric("scarfgw_events_spooled_total")
    submit_range(writer, 0, 30)
    assert metric("scarfgw_events_queue_depth") <= 6
    assert metric("scarfgw_events_spooled_total") - spooled > 0
    assert spool_lines(tmp_path)[:3] == [0, 1, 2]
    sink.down = False
    submit_range(writer, 30, 32)
    clock.pump([1.0] * 20)
    assert sink.numbers() == list(range(32))
    assert spool_lines(tmp_path) == []
    assert not (tmp_path / "spool" / "fake.offset").exists()


def test_spool_replayed_before_newer_events_while_they_keep_coming(tmp_path, clock):
    sink = FakeSink(clock, fail_times=1)
    writer = make_writer(tmp_path, [sink], clock)
    submit_range(writer, 0, 20)
    for n in range(20, 40):
        writer.submit({"n": n})
        clock.advance(0.3)
    clock.pump([1.0] * 10)
    assert sink.numbers() == list(range(40))


def test_drops_counted_when_spool_is_full(tmp_path, clock):
    sink = FakeSink(clock, down=True)
    line_bytes = len(serialise({"n": 10})) + 1
    writer = make_writer(tmp_path, [sink], clock, spool_max_bytes=12 * line_bytes)
    dropped = metric("scarfgw_events_dropped_total", reason="spool_full")
    submit_range(writer, 10, 40)
    lost = metric("scarfgw_events_dropped_total", reason="spool_full") - dropped
    assert lost > 0
    assert sum(f.stat().st_size for f in (tmp_path / "spool").glob("*.spool")) <= 12 * line_bytes
    sink.down = False
    clock.pump([1.0] * 20)
    delivered = sink.numbers()
    assert delivered == sorted(delivered)
    assert len(delivered) + lost == 30
    assert delivered[:3] == [10, 11, 12] and delivered[-6:] == list(range(34, 40))


# --- stop and restart ------------------------------------------------------------------------


def test_stop_flushes_everything(tmp_path, clock):
    sink = FakeSink(clock)
    writer = make_writer(tmp_path, [sink], clock, batch_size=4, queue_limit=100)
    submit_range(writer, 0, 10)
    stopped = writer.stopService()
    assert stopped.called
    assert sink.numbers() == list(range(10))
    assert sink.closed
    assert spool_lines(tmp_path) == []


def test_stop_spools_at_once_when_sink_is_down(tmp_path, clock):
    sink = FakeSink(clock, down=True)
    writer = make_writer(tmp_path, [sink], clock)
    submit_range(writer, 0, 5)
    clock.advance(1.0)
    stopped = writer.stopService()
    assert stopped.called
    assert spool_lines(tmp_path) == list(range(5))
    assert metric("scarfgw_events_queue_depth") == 0


def test_stop_is_bounded_when_sink_never_answers(tmp_path, clock):
    sink = FakeSink(clock)
    sink.hang = True
    writer = make_writer(tmp_path, [sink], clock, stop_timeout=5.0)
    submit_range(writer, 0, 4)
    done: list[object] = []
    writer.stopService().addCallback(done.append)
    clock.advance(4.9)
    assert done == []
    clock.advance(0.1)
    assert done == [None]
    assert spool_lines(tmp_path) == [0, 1, 2, 3]


def test_events_submitted_after_stop_are_spooled(tmp_path, clock):
    sink = FakeSink(clock)
    writer = make_writer(tmp_path, [sink], clock)
    writer.stopService()
    writer.submit({"n": 7})
    assert spool_lines(tmp_path) == [7]


def test_restart_replays_the_spool_first(tmp_path, clock):
    down = FakeSink(clock, down=True)
    first = make_writer(tmp_path, [down], clock)
    submit_range(first, 0, 20)
    first.stopService()
    assert spool_lines(tmp_path) == list(range(20))

    healthy = FakeSink(clock)
    second = make_writer(tmp_path, [healthy], clock)
    assert healthy.numbers()[:3] == [0, 1, 2]
    submit_range(second, 20, 25)
    clock.pump([1.0] * 10)
    assert healthy.numbers() == list(range(25))
    assert spool_lines(tmp_path) == []


def test_restart_resumes_from_recorded_offset(tmp_path, clock):
    down = FakeSink(clock, down=True)
    first = make_writer(tmp_path, [down], clock)
    submit_range(first, 0, 9)
    first.stopService()

    partial = FakeSink(clock)
    second = EventWriter(clock=clock, sinks=[partial], spool_dir=tmp_path / "spool",
                         batch_size=3, queue_limit=6)
    real_write = partial.write
    partial.write = lambda lines: (  # type: ignore[method-assign]
        real_write(lines) if len(partial.batches) < 1 else Deferred())
    second.startService()
    assert partial.numbers() == [0, 1, 2]
    clock.advance(5.0)
    second.stopService()
    clock.advance(5.0)

    third_sink = FakeSink(clock)
    make_writer(tmp_path, [third_sink], clock)
    assert third_sink.numbers() == list(range(3, 9))


# --- spool details ---------------------------------------------------------------------------


def test_spool_cuts_a_torn_last_line(tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "s.0000000000000000.spool").write_bytes(b'{"n":1}\n{"n":2}\n{"n":')
    spool = Spool(spool_dir, "s", 1 << 20)
    assert spool.read(10) == [b'{"n":1}', b'{"n":2}']
    spool.commit()
    assert not spool.pending
    assert spool.append([b'{"n":3}']) == 1
    assert spool.read(10) == [b'{"n":3}']


def test_spool_segments_and_cap(tmp_path):
    spool = Spool(tmp_path, "s", 160)
    lines = [b"x" * 9] * 20
    assert spool.append(lines) == 16
    assert spool.size == 160
    assert spool.append([b"y"]) == 0
    assert spool.read(100) == [b"x" * 9] * 16
    spool.commit()
    assert spool.size == 0 and list(tmp_path.glob("*.spool")) == []


def test_spool_reads_across_segments(tmp_path):
    spool = Spool(tmp_path, "s", 16 * 8)
    for n in range(10):
        spool.append([b"%07d" % n])
    assert len(list(tmp_path.glob("s.*.spool"))) == 10
    seen = []
    while spool.pending:
        seen += spool.read(3)
        spool.commit()
    assert seen == [b"%07d" % n for n in range(10)]


# --- validation and reopen -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"queue_limit": 2}, "queue_limit"),
        ({"spool_max_bytes": 0}, "spool_max_bytes"),
    ],
)
def test_writer_rejects_bad_settings(tmp_path, clock, options, message):
    with pytest.raises(ValueError, match=message):
        EventWriter(clock=clock, sinks=[], spool_dir=tmp_path, **{"batch_size": 3, **options})


def test_writer_rejects_duplicate_sink_names(tmp_path, clock):
    with pytest.raises(ValueError, match="unique"):
        EventWriter(clock=clock, sinks=[FakeSink(clock), FakeSink(clock)], spool_dir=tmp_path)


def test_reopen_reaches_every_sink(tmp_path, clock):
    sinks = [FakeSink(clock, name="a"), FakeSink(clock, name="b")]
    make_writer(tmp_path, sinks, clock).reopen()
    assert [s.reopened for s in sinks] == [1, 1]


# --- JsonlSink and build_sinks ---------------------------------------------------------------


class InlinePool:
    """A thread pool that runs the work at once, in the calling thread."""

    def callInThreadWithCallback(self, on_result, func, *args, **kwargs):
        try:
            result = func(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class InlineReactor:
    def getThreadPool(self):
        return InlinePool()

    def callFromThread(self, func, *args):
        func(*args)


def test_jsonl_sink_appends_valid_lines_and_reopens(tmp_path, clock):
    path = tmp_path / "logs" / "events.jsonl"
    sink = JsonlSink(path, reactor=InlineReactor(), fsync=True)
    writer = make_writer(tmp_path, [sink], clock)  # type: ignore[list-item]
    writer.submit({"n": 1, "ua": "é\n"})
    writer.submit({"n": 2})
    clock.advance(1.0)
    rotated = tmp_path / "logs" / "events.jsonl.1"
    path.rename(rotated)
    writer.reopen()
    writer.submit({"n": 3})
    writer.stopService()
    assert [json.loads(line) for line in rotated.read_text().splitlines()] == [
        {"n": 1, "ua": "é\n"}, {"n": 2}]
    assert path.read_bytes() == b'{"n":3}\n'


def test_jsonl_sink_failure_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = JsonlSink(blocker / "events.jsonl", reactor=InlineReactor())
    failures: list[Failure] = []
    sink.write([b"{}"]).addErrback(failures.append)
    assert failures and failures[0].check(OSError)


def test_build_sinks_from_config(tmp_path, clock):
    sinks = build_sinks(
        [{"type": "jsonl", "path": str(tmp_path / "e.jsonl"), "fsync": True},
         {"type": "http", "url": "http://127.0.0.1:8123/?query=INSERT", "gzip": True,
          "headers": {"X-ClickHouse-User": "scarf"}, "timeout": 3},
         {"type": "http", "url": "https://collector.example/", "name": "vector"}],
        clock,
    )
    assert [type(s) for s in sinks] == [JsonlSink, HttpSink, HttpSink]
    assert [s.name for s in sinks] == ["jsonl", "http", "vector"]
    assert [s.name for s in build_sinks([{"type": "jsonl", "path": "a"},
                                         {"type": "jsonl", "path": "b"}], clock)] == [
        "jsonl-0", "jsonl-1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "kafka"}, r"sinks\[0\]\.type"),
        ({"path": "x"}, r"sinks\[0\]\.type"),
        ({"type": "jsonl"}, r"sinks\[0\]\.path: required"),
        ({"type": "jsonl", "path": 3}, r"path: expected str"),
        ({"type": "jsonl", "path": "x", "fsync": "yes"}, r"fsync: expected bool"),
        ({"type": "jsonl", "path": "x", "url": "http://a/"}, r"unknown key\(s\) url"),
        ({"type": "http", "url": "ftp://x/"}, r"url: must start with http"),
        ({"type": "http", "url": "http://x/", "timeout": 0}, r"timeout: must be positive"),
        ({"type": "http", "url": "http://x/", "timeout": True}, r"timeout: expected float"),
        ({"type": "http", "url": "http://x/", "headers": {"A": 1}}, r"headers: names"),
        ({"type": "http", "url": "http://x/", "headers": ["A"]}, r"headers: expected dict"),
        ({"type": "jsonl", "path": "x", "name": "a/b"}, r"name: only letters"),
        ("jsonl", r"sinks\[0\]: expected a mapping"),
    ],
)
def test_build_sinks_rejects_bad_specs(clock, spec, message):
    with pytest.raises(ValueError, match=message):
        build_sinks([spec], clock)


def test_build_sinks_rejects_duplicate_names(clock):
    with pytest.raises(ValueError, match=r"sinks\[1\]\.name: 'a' is already used"):
        build_sinks([{"type": "jsonl", "path": "x", "name": "a"},
                     {"type": "jsonl", "path": "y", "name": "a"}], clock)
