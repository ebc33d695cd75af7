"""Replaying the spools of workers that no longer exist.

Worker ``N`` spools under ``events.spool_dir/worker-N``. When ``workers`` is lowered, the
spools of the workers that are gone would never be sent; the primary replays each of them
with a writer of its own (to the same sinks), which sends what they hold and then idles
until the primary stops.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger

from scarfgw.analytics.sinks import build_sinks
from scarfgw.analytics.writer import EventWriter
from scarfgw.config import EventsConfig

log = Logger()

_WORKER_FOLDER = re.compile(r"worker-([0-9]+)")


def worker_spool_dir(spool_dir: str, index: int) -> str:
    """Where process ``index`` spools (the primary, 0, directly in ``spool_dir``)."""
    return str(Path(spool_dir) / f"worker-{index}") if index else spool_dir


def orphaned_spools(spool_dir: str, workers: int) -> list[Path]:
    """The spool folders of workers ``workers`` and up that hold files."""
    root = Path(spool_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        match = _WORKER_FOLDER.fullmatch(folder.name)
        if match and int(match.group(1)) >= workers and folder.is_dir() and any(
                folder.glob("*.spool")):
            found.append(folder)
    return found


class OrphanSpools(MultiService):
    """One writer per orphaned spool folder, replaying it to the configured sinks.

    Build it before the process's own writer: the queue-depth gauge follows the writer
    built last (these hold nothing in memory)."""

    def __init__(self, reactor: Any, events: EventsConfig, workers: int) -> None:
        super().__init__()
        for folder in orphaned_spools(events.spool_dir, workers):
            log.info("replaying the spool of a worker that no longer runs: {folder}",
                     folder=folder)
            EventWriter(reactor, build_sinks(events.sinks, reactor), spool_dir=folder,
                        batch_size=events.batch_size, flush_interval=events.flush_interval,
                        queue_limit=events.queue_limit,
                        spool_max_bytes=events.spool_max_bytes).setServiceParent(self)
