"""The batched event writer: bounded memory, per-sink retries, an ordered disk spool.

``submit`` serialises the event at once (0.5 us for a typical 530-byte event: spread over
requests instead of a stall per 500-event batch at flush time, immune to later
mutation of the dict, and a third of the memory of a queued dict) and hands the bytes to
one lane per sink. A lane sends a batch when ``batch_size`` events wait or
``flush_interval`` has passed, with at most one batch in flight; a failed batch is retried
with exponential backoff while new events keep queueing. Past ``queue_limit`` events in
memory, the oldest ``batch_size`` go to the lane's spool on disk; a lane replays its spool
before any in-memory event, so each sink sees events in submission order. Only when the
spool holds ``spool_max_bytes`` are events dropped (and counted).

Spool I/O runs on the reactor thread, unsynced (page cache: 0.05 ms to append and 0.1 ms to
read a 500-event batch): it only happens while a sink is behind, and keeps ordering simple.
Delivery is at least once: a batch whose fate is unknown at stop or crash is sent again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, cast

import orjson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from scarfgw.analytics.sinks import DelayedCall, Scheduler, Sink
from scarfgw.ops.metrics import (
    EVENTS_DROPPED,
    EVENTS_SPOOLED,
    EVENTS_WRITTEN,
    event_queued,
    watch_queue_depth,
)

_log: Final = Logger(namespace=__name__)  # compiled code has no frame to name it by

_SEGMENTS_PER_SPOOL: Final = 16
_TAIL_CHUNK: Final = 65536


def serialise(event: dict[str, Any]) -> bytes:
    """One compact JSON line (UTF-8, no newline).

    orjson (about 14 times faster than the json module, byte-identical output for events);
    what it refuses (lone surrogates, integers beyond 64 bits) goes through the json module
    with ``\\u`` escapes. orjson's result sits in an over-allocated heap block: held in a
    queue of hundreds, such blocks made the C heap grow and shrink with about two page faults
    per event (2 us); an exact-size copy (0.1 us) keeps the heap still.
    """
    try:
        return memoryview(orjson.dumps(event)).tobytes()
    except TypeError:
        return json.dumps(event, separators=(",", ":")).encode()


def _cut_torn_tail(path: Path, size: int) -> int:
    """Cut a final line without newline (a crash during an append); return the new size."""
    end = size
    with path.open("r+b") as file:
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            file.seek(start)
            newline = file.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end != size:
            file.truncate(end)
    return end


class Spool:
    """An append-only queue of serialised events on disk for one sink, oldest first.

    Lines live in segment files ``<name>.<16-digit seq>.spool`` of about 1/16 of
    ``max_bytes``; ``<name>.offset`` holds ``"<seq> <offset>"``, how far the oldest segment
    was confirmed. ``read`` hands out lines, ``commit`` confirms them; a fully confirmed
    segment is deleted. ``max_bytes`` caps the bytes on disk.
    """

    def __init__(self, directory: Path, name: str, max_bytes: int) -> None:
        self._dir = directory
        self._name = name
        self._max_bytes = max_bytes
        self._segment_bytes = max(1, max_bytes // _SEGMENTS_PER_SPOOL)
        self._segments: deque[int] = deque()
        self._sizes: dict[int, int] = {}
        self._offset = 0
        self._read_end: int | None = None
        self._next_seq = 0
        self._load()

    @property
    def size(self) -> int:
        """Bytes on disk, confirmed-but-not-yet-deleted ones included."""
        return sum(self._sizes.values())

    @property
    def pending(self) -> bool:
        """True while some lines were not handed out by ``read``."""
        if len(self._segments) != 1:
            return bool(self._segments)
        position = self._offset if self._read_end is None else self._read_end
        return position < self._sizes[self._segments[0]]

    def append(self, lines: Sequence[bytes], *, capped: bool = True) -> int:
        """Append as many of ``lines`` as fit under the cap (all if not ``capped``).

        Returns how many were written; raises OSError (nothing written) on a disk error.
        """
        room = self._max_bytes - self.size
        accepted = 0
        for line in lines:
            room -= len(line) + 1
            if capped and room < 0:
                break
            accepted += 1
        if not accepted:
            return 0
        data = b"".join([line + b"\n" for line in lines[:accepted]])
        if self._segments and self._sizes[self._segments[-1]] < self._segment_bytes:
            seq = self._segments[-1]
        else:
            seq = self._next_seq
        path = self._segment_path(seq)
        before = self._sizes.get(seq, 0)
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as file:
                file.write(data)
        except OSError:
            with contextlib.suppress(OSError):
                os.truncate(path, before)
            raise
        if seq == self._next_seq:
            self._segments.append(seq)
            self._next_seq += 1
        self._sizes[seq] = before + len(data)
        return accepted

    def append_in_flight(self, lines: Sequence[bytes]) -> None:
        """Append ``lines`` to the empty spool (uncapped) as if ``read`` had handed them out."""
        self.append(lines, capped=False)
        self._read_end = self._sizes[self._segments[0]]

    def read(self, count: int) -> list[bytes]:
        """Up to ``count`` of the oldest lines not yet handed out (from one segment)."""
        position = self._offset
        lines: list[bytes] = []
        with self._segment_path(self._segments[0]).open("rb") as file:
            file.seek(position)
            while len(lines) < count:
                line = file.readline()
                if not line.endswith(b"\n"):
                    break
                lines.append(line[:-1])
                position += len(line)
        self._read_end = position
        return lines

    def commit(self) -> None:
        """Confirm the lines handed out by the last ``read``; delete what is fully confirmed."""
        if self._read_end is not None:
            self._offset, self._read_end = self._read_end, None
        self._drop_confirmed()
        self._save_offset()

    def _segment_path(self, seq: int) -> Path:
        return self._dir / f"{self._name}.{seq:016d}.spool"

    def _offset_path(self) -> Path:
        return self._dir / f"{self._name}.offset"

    def _load(self) -> None:
        pattern = re.compile(re.escape(self._name) + r"\.(\d{16})\.spool")
        with contextlib.suppress(FileNotFoundError), os.scandir(self._dir) as entries:
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if match:
                    self._sizes[int(match.group(1))] = entry.stat().st_size
        self._segments = deque(sorted(self._sizes))
        if not self._segments:
            return
        self._next_seq = self._segments[-1] + 1
        tail = self._segments[-1]
        self._sizes[tail] = _cut_torn_tail(self._segment_path(tail), self._sizes[tail])
        with contextlib.suppress(FileNotFoundError, ValueError):
            seq, offset = map(int, self._offset_path().read_text().split())
            if seq == self._segments[0]:
                self._offset = min(offset, self._sizes[seq])
        self._drop_confirmed()

    def _drop_confirmed(self) -> None:
        while self._segments and self._offset >= self._sizes[self._segments[0]]:
            seq = self._segments.popleft()
            del self._sizes[seq]
            self._segment_path(seq).unlink(missing_ok=True)
            self._offset = 0

    def _save_offset(self) -> None:
        path = self._offset_path()
        if not self._segments:
            path.unlink(missing_ok=True)
            return
        temporary = path.with_suffix(".tmp")
        temporary.write_text(f"{self._segments[0]} {self._offset}\n")
        os.replace(temporary, path)


class _Lane:
    """One sink's in-memory queue, batch in flight, retry state and spool.

    Invariants: at most one batch is being written or awaiting its retry; when the spool
    holds lines, that batch came from the spool (so the spool is older than memory).
    """

    def __init__(self, writer: EventWriter, sink: Sink, spool: Spool) -> None:
        self.writer = writer
        self.sink = sink
        self.spool = spool
        self.queue: deque[bytes] = deque()
        self.batch: list[bytes] | None = None
        self.batch_in_spool = False
        self.writing: Deferred[None] | None = None
        self.retry: DelayedCall | None = None
        self.failures = 0
        self.flush_due = False
        self.stopping = False
        self.stopped: Deferred[None] = Deferred()
        self._pumping = False
        self._pump_again = False

    @property
    def held(self) -> int:
        """Events of this lane held only in memory."""
        in_flight = len(self.batch) if self.batch is not None and not self.batch_in_spool else 0
        return len(self.queue) + in_flight

    def push(self, line: bytes) -> None:
        """Queue one event; spill to the spool past the queue limit."""
        if self.stopped.called:
            self._to_spool([line])
            return
        queue = self.queue
        queue.append(line)
        held = len(queue)
        if held > self.writer.queue_limit:
            self._spill()
        elif held >= self.writer.batch_size or self.stopping:
            self.pump()

    def pump(self) -> None:
        """Start the next write if the lane is idle (iteratively: sinks may answer at once)."""
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._start_next()
        finally:
            self._pumping = False

    def stop(self) -> Deferred[None]:
        """Send what memory holds if the sink is healthy, else spool it; fire when done."""
        self.stopping = True
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        self.pump()
        return self.stopped

    def _start_next(self) -> None:
        if self.writing is not None:
            return
        if self.stopping:
            if self.batch is None and self.queue and not self.spool.pending:
                self._send(self._take(), in_spool=False)
            else:
                self._give_up()
        elif self.batch is not None or self.retry is not None or not self.writer.running:
            return
        elif self.spool.pending:
            try:
                lines = self.spool.read(self.writer.batch_size)
            except OSError as error:
                _log.error("event spool of {sink} unreadable: {error}", sink=self.sink.name,
                           error=error)
                self._back_off()
                return
            self._send(lines, in_spool=True)
        elif len(self.queue) >= self.writer.batch_size or (self.queue and self.flush_due):
            self._send(self._take(), in_spool=False)
        else:
            self.flush_due = False

    def _take(self) -> list[bytes]:
        count = min(self.writer.batch_size, len(self.queue))
        lines = [self.queue.popleft() for _ in range(count)]
        if not self.queue:
            self.flush_due = False
        return lines

    def _send(self, lines: list[bytes], *, in_spool: bool) -> None:
        self.batch = lines
        self.batch_in_spool = in_spool
        self._write()

    def _write(self) -> None:
        self.retry = None
        assert self.batch is not None
        self.writing = maybeDeferred(self.sink.write, self.batch)
        self.writing.addCallbacks(self._written, self._failed)

    def _written(self, _: None) -> None:
        assert self.batch is not None
        self.writing = None
        EVENTS_WRITTEN.labels(sink=self.sink.name).inc(len(self.batch))
        if self.batch_in_spool:
            try:
                self.spool.commit()
            except OSError as error:
                _log.error("event spool of {sink}: cannot record progress: {error}",
                           sink=self.sink.name, error=error)
        self.batch = None
        self.failures = 0
        self.pump()

    def _failed(self, failure: Failure) -> None:
        self.writing = None
        if self.stopping:
            _log.warn("event sink {sink} failed while stopping, spooling: {error}",
                      sink=self.sink.name, error=failure.getErrorMessage())
            self.pump()
            return
        _log.warn("event sink {sink} failed ({count} in a row): {error}", sink=self.sink.name,
                  count=self.failures + 1, error=failure.getErrorMessage())
        self._back_off()

    def _back_off(self) -> None:
        self.failures += 1
        exponent = min(self.failures - 1, 64)
        delay = min(self.writer.retry_initial * 2**exponent, self.writer.retry_max)
        self.retry = self.writer.clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        if self.batch is None:
            self.retry = None
            self.pump()
        else:
            self._write()

    def _spill(self) -> None:
        """Move the oldest queued events to the spool, after the memory batch in flight."""
        chunk = self._take()
        if self.batch is not None and not self.batch_in_spool:
            try:
                self.spool.append_in_flight(self.batch)
            except OSError as error:
                self._lose(chunk, error)
                return
            self.batch_in_spool = True
            EVENTS_SPOOLED.inc(len(self.batch))
        self._to_spool(chunk)

    def _give_up(self) -> None:
        """Stop sending: spool the unconfirmed memory batch and the queue, then finish."""
        if self.batch is not None and not self.batch_in_spool:
            self._to_spool(self.batch)
        self.batch = None
        self._to_spool(list(self.queue))
        self.queue.clear()
        if not self.stopped.called:
            self.stopped.callback(None)

    def _to_spool(self, lines: list[bytes]) -> None:
        if not lines:
            return
        try:
            accepted = self.spool.append(lines)
        except OSError as error:
            self._lose(lines, error)
            return
        EVENTS_SPOOLED.inc(accepted)
        if accepted < len(lines):
            EVENTS_DROPPED.labels(reason="spool_full").inc(len(lines) - accepted)

    def _lose(self, lines: list[bytes], error: OSError) -> None:
        _log.error("event spool of {sink} unwritable, {count} events lost: {error}",
                   sink=self.sink.name, count=len(lines), error=error)
        EVENTS_DROPPED.labels(reason="spool_error").inc(len(lines))


class EventWriter(Service):
    """Batches events to every sink; see the module docstring for the delivery rules.

    ``queue_limit`` and ``spool_max_bytes`` apply per sink; the spool of a sink lives in
    ``spool_dir`` under the sink's name. ``stop_timeout`` bounds how long ``stopService``
    waits for sinks before it spools what they did not confirm.
    """

    def __init__(
        self,
        clock: Scheduler,
        sinks: Sequence[Sink],
        *,
        spool_dir: str | os.PathLike[str],
        batch_size: int = 500,
        flush_interval: float = 1.0,
        queue_limit: int = 100_000,
        spool_max_bytes: int = 1 << 30,
        retry_initial: float = 0.5,
        retry_max: float = 60.0,
        stop_timeout: float = 5.0,
    ) -> None:
        for label, value in (("batch_size", batch_size), ("flush_interval", flush_interval),
                             ("queue_limit", queue_limit), ("spool_max_bytes", spool_max_bytes),
                             ("retry_initial", retry_initial), ("retry_max", retry_max),
                             ("stop_timeout", stop_timeout)):
            if value <= 0:
                raise ValueError(f"events.{label}: must be positive, got {value!r}")
        if queue_limit < batch_size:
            raise ValueError(f"events.queue_limit: must be at least batch_size ({batch_size})")
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"events.sinks: sink names must be unique, got {names}")
        self.clock = clock
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_limit = queue_limit
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.stop_timeout = stop_timeout
        self._lanes = [_Lane(self, sink, Spool(Path(spool_dir), sink.name, spool_max_bytes))
                       for sink in sinks]
        self._timer: DelayedCall | None = None
        watch_queue_depth(self.depth)

    def submit(self, event: dict[str, Any]) -> None:
        """Accept one event; never blocks on a sink and never raises."""
        try:
            line = serialise(event)
        except (TypeError, ValueError) as error:
            EVENTS_DROPPED.labels(reason="unserialisable").inc()
            _log.error("event dropped, not serialisable: {error}", error=error)
            return
        try:
            event_queued()
            for lane in self._lanes:
                lane.push(line)
            if self._timer is None and self.running:
                self._timer = self.clock.callLater(self.flush_interval, self._flush_due)
        except Exception:
            _log.failure("event writer failed to accept an event")

    def reopen(self) -> None:
        """Reopen the sinks' files (call on SIGUSR1, after logrotate)."""
        for lane in self._lanes:
            lane.sink.reopen()

    def depth(self) -> int:
        """The most events any sink holds only in memory (``scarfgw_events_queue_depth``)."""
        return max((lane.held for lane in self._lanes), default=0)

    def startService(self) -> None:
        """Start sending: spooled events from an earlier run first, then new ones."""
        super().startService()
        for lane in self._lanes:
            lane.flush_due = True
            lane.pump()

    def stopService(self) -> Deferred[None]:
        """Write or spool every held event, then close the sinks.

        Fires within about twice ``stop_timeout``, even when a sink never answers.
        """
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline = self.clock.callLater(self.stop_timeout, self._cancel_writes)
        drained: Deferred[Any] = gatherResults([lane.stop() for lane in self._lanes])
        drained.addCallback(self._close_sinks, deadline)
        return drained

    def _flush_due(self) -> None:
        self._timer = None
        for lane in self._lanes:
            if lane.queue:
                lane.flush_due = True
                lane.pump()

    def _cancel_writes(self) -> None:
        for lane in self._lanes:
            if lane.writing is not None:
                lane.writing.cancel()

    def _close_sinks(self, _: object, deadline: DelayedCall) -> Deferred[None]:
        if deadline.active():
            deadline.cancel()
        closing = DeferredList(
            [maybeDeferred(lane.sink.close) for lane in self._lanes], consumeErrors=True
        )
        closing.addTimeout(self.stop_timeout, cast(IReactorTime, self.clock))
        return closing.addBoth(lambda _: None)
