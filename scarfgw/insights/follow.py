"""Following the JSONL sink files into the DuckDB store (blocking; run in one thread).

A file is known by its device, inode and first line, stored with the offset after the last
complete line ingested. Each :meth:`Follower.step` takes at most ``chunk_bytes`` of complete
lines from one file (staged as files of at most ``piece_bytes``, copied in the kernel: only
the end of each piece is read, for its last newline) and stores them with the new offset in
one transaction; a partial last line waits for its newline. Once no file has more waiting,
a step sorts a run of the recent events instead
(:meth:`~scarfgw.insights.embedded.DuckDBStore.sort_recent`), and once none is left,
counts settled days for the totals
(:meth:`~scarfgw.insights.embedded.DuckDBStore.count_days`): a backlog goes in first, as
fast as it can, and is sorted and counted afterwards.

- Restart: reading resumes at the stored offset when the file is still the same one.
- Rotation (logrotate + ``kill -USR1``): the file open here keeps its inode; it is read to
  its end, and once the path holds a new file and the old one has not grown for
  ``rotation_grace`` seconds (workers reopen at their next write), the new file is read from
  its start. After a restart, a rotated file is looked for as ``<path>.1``.
- Truncation (copytruncate): a file shorter than the stored offset is read from its start.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import duckdb

from scarfgw.insights.embedded import PIECE_BYTES, DuckDBStore, FilePosition

_HEAD_BYTES = 256
_TAIL_BYTES = 64 << 10


@dataclass
class _Open:
    """A file being read: its handle and identity, and when it last grew."""

    handle: BinaryIO
    position: FilePosition
    grew_at: float


def _head(handle: BinaryIO) -> str:
    """The file's first bytes (up to the first newline) as hex: its identity with the inode."""
    data = os.pread(handle.fileno(), _HEAD_BYTES, 0)
    return data.partition(b"\n")[0].hex()


def _same_file(stored: FilePosition, info: os.stat_result, head: str) -> bool:
    """True when the file of ``info`` and ``head`` is the one ``stored`` describes (the
    first line may have grown since: the heads agree as far as both go)."""
    if (info.st_dev, info.st_ino) != (stored.device, stored.inode):
        return False
    return head.startswith(stored.head) or stored.head.startswith(head)


def _lines_end(source: int, offset: int, length: int) -> int:
    """How many of the ``length`` bytes of ``source`` from ``offset`` are complete lines
    (up to the last newline), reading back from their end a block at a time."""
    end = offset + length
    while end > offset:
        begin = max(offset, end - _TAIL_BYTES)
        newline = os.pread(source, end - begin, begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1 - offset
        end = begin
    return 0


@dataclass(frozen=True)
class StepResult:
    """What a step did: events added, lines skipped, whether more is waiting, how many
    bytes of the followed files are still unread after it, how many recent events it
    sorted into a run, and why sorting failed (the events read are stored all the same;
    the next step tries again)."""

    added: int
    skipped: int
    more: bool
    unread: int = 0
    sorted: int = 0
    sort_error: str | None = None


class Follower:
    """Reads the files at ``paths`` into ``store``; ``clock`` gives seconds (monotonic)."""

    def __init__(self, store: DuckDBStore, paths: Sequence[str], *, chunk_bytes: int = 512 << 20,
                 piece_bytes: int = PIECE_BYTES, rotation_grace: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.paths = [os.path.abspath(path) for path in paths]
        self.chunk_bytes = chunk_bytes
        self.piece_bytes = min(piece_bytes, chunk_bytes)
        self.rotation_grace = rotation_grace
        self.clock = clock
        self._open: dict[str, _Open] = {}

    def step(self) -> StepResult:
        """Ingest one chunk from each file that has one; when none has more waiting, sort
        a run of the recent events, or else count settled days (more is waiting while
        either did)."""
        added = skipped = unread = 0
        more = False
        for path in self.paths:
            result = self._step_file(path)
            added, skipped = added + result.added, skipped + result.skipped
            more, unread = more or result.more, unread + result.unread
        if more:
            return StepResult(added, skipped, more, unread)
        try:
            moved = self.store.sort_recent()
            counted = 0 if moved else self.store.count_days()
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:  # e.g. no room for the sort: the chunks are stored
            return StepResult(added, skipped, False, unread, sort_error=str(exc))
        return StepResult(added, skipped, moved > 0 or counted > 0, unread, moved)

    def close(self) -> None:
        """Close the open files."""
        for current in self._open.values():
            current.handle.close()
        self._open.clear()

    def _step_file(self, path: str) -> StepResult:
        current = self._open.get(path) or self._resume(path)
        if current is None:
            return StepResult(0, 0, False)
        result = self._read(path, current)
        if result.added or result.skipped or result.more:
            return result
        if self._replaced(path, current):
            current.handle.close()
            del self._open[path]
            return StepResult(0, 0, self._open_new(path) is not None)
        return result

    def _open_new(self, path: str) -> _Open | None:
        """Open the file that replaced a rotated one, from its start."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 (kept open between steps)
        except OSError:
            return None
        info = os.fstat(handle.fileno())
        position = FilePosition(info.st_dev, info.st_ino, _head(handle), 0)
        opened = self._open[path] = _Open(handle, position, self.clock())
        return opened

    def _resume(self, path: str) -> _Open | None:
        """Open ``path`` where the store left it (or a rotated ``path.1`` still unread)."""
        stored = self.store.position(path)
        for candidate in (path + ".1", path) if stored else (path,):
            try:
                handle = open(candidate, "rb")  # noqa: SIM115 (kept open between steps)
            except OSError:
                continue
            info = os.fstat(handle.fileno())
            head = _head(handle)
            same = stored is not None and _same_file(stored, info, head)
            if candidate != path and not same:
                handle.close()
                continue
            offset = stored.offset if same and stored and stored.offset <= info.st_size else 0
            position = FilePosition(info.st_dev, info.st_ino, head, offset)
            opened = self._open[path] = _Open(handle, position, self.clock())
            return opened
        return None

    def _read(self, path: str, current: _Open) -> StepResult:
        position = current.position
        size = os.fstat(current.handle.fileno()).st_size
        if size < position.offset:
            position = current.position = FilePosition(position.device, position.inode,
                                                       _head(current.handle), 0)
        if size == position.offset:
            return StepResult(0, 0, False)
        files, end = self._stage(current, size)
        if not files:
            return StepResult(0, 0, False, size - position.offset)
        head = position.head or _head(current.handle)
        taken = FilePosition(position.device, position.inode, head, end)
        added, skipped = self.store.ingest(path, taken, files)
        current.position = taken  # only once stored: a failed step reads the chunk again
        current.grew_at = self.clock()
        return StepResult(added, skipped, taken.offset < size, size - taken.offset)

    def _stage(self, current: _Open, size: int) -> tuple[list[str], int]:
        """Stage the complete lines of the next chunk; answer the staged files and the offset
        after them."""
        start = end = current.position.offset
        limit = min(size, start + self.chunk_bytes)
        pieces: list[tuple[int, int]] = []
        while end < limit:
            length = min(self.piece_bytes, limit - end)
            cut = _lines_end(current.handle.fileno(), end, length)
            if cut == 0:
                if pieces or length < self.piece_bytes:
                    break
                cut = length  # one line longer than a piece: corrupt, skipped as a whole
            pieces.append((end, cut))
            end += cut
        return self.store.stage(current.handle.fileno(), pieces), end

    def _replaced(self, path: str, current: _Open) -> bool:
        """True when ``path`` now names another file and the open one has been quiet for
        the grace period (or was truncated away)."""
        try:
            info = os.stat(path)
        except OSError:
            return False
        if (info.st_dev, info.st_ino) == (current.position.device, current.position.inode):
            return False
        return self.clock() - current.grew_at >= self.rotation_grace
