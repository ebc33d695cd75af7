"""Insights in the primary process: the engine, the ingest loop, the ``listen.insights`` site.

With the ``duckdb`` engine the primary follows the JSONL sink files into the store: one
ingest step at a time in a thread of its own (a large file goes in chunk by chunk, the
reactor never waits), again at once while more is waiting, else every
:data:`POLL_SECONDS` (once it has caught up, the store sorts its events by package in runs,
see :mod:`scarfgw.insights.embedded`). Queries run in a separate pool of two threads. A
shutdown interrupts the step and the queries under way.
With ``clickhouse`` there is nothing to ingest: the ``http`` sinks of every instance fill
the table.

The runtime binds the ``insights`` listener like every listener, before twistd drops
privileges, as a child of the :class:`InsightsService` serving its site; the engine is
opened after, as the gateway's user.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import duckdb
from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.interfaces import IListeningPort, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource

from scarfgw.insights.catalogue import catalogue
from scarfgw.insights.clickhouse import ClickHouseStore
from scarfgw.insights.embedded import DuckDBStore
from scarfgw.insights.engine import Engine
from scarfgw.insights.follow import Follower, StepResult
from scarfgw.insights.reader import ThreadedReader
from scarfgw.insights.settings import InsightsConfig
from scarfgw.insights.site import InsightsRoot, InsightsSite, insights_root
from scarfgw.insights.tokens import Tokens
from scarfgw.insights.ui import InsightsUI
from scarfgw.ops import metrics
from scarfgw.rules.base import Rule

log = Logger()

POLL_SECONDS: Final = 1.0
QUERY_THREADS: Final = 2
INTERRUPT_SECONDS: Final = 0.1
"""How often a shutdown interrupts the store again (DuckDB interrupts running statements
only: one about to start when it is asked runs on)."""
INGEST_NICENESS: Final = 19
"""How much the ingest thread yields to the reactor (Linux: a thread's own nice value, and
that of the DuckDB workers it starts). The lowest priority: on a core the reactor keeps busy
the ingest gets about 1.5 % of it (at 10, about 10 %: the docker 307 row lost 7 % with
insights on), and it catches up once requests leave time."""

T = TypeVar("T")


def _at_low_priority(work: Callable[[], T]) -> T:
    """``work()`` at a lower CPU priority than the reactor's thread: the ingest catches up
    when the process has time to spare instead of competing with requests."""
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INGEST_NICENESS)
    return work()


def open_engine(settings: InsightsConfig, clock: Callable[[], float], *,
                read_only: bool = False) -> Engine:
    """The configured engine (a DuckDB file is created unless ``read_only``); ``clock``
    gives now in epoch seconds."""
    if settings.engine == "clickhouse":
        return ClickHouseStore(settings.clickhouse)
    return DuckDBStore(settings.duckdb_path, read_only=read_only, clock=clock,
                       threads=settings.duckdb_threads, memory_limit=settings.duckdb_memory_limit)


class InsightsService(MultiService):
    """Owns the engine, its threads, the ingest loop and the insights site, for the packages
    of ``rules``, ingesting the JSONL files at ``sink_paths`` (duckdb). The runtime adds the
    site's listener as a child, telling :meth:`listening` its port."""

    def __init__(self, settings: InsightsConfig, rules: Sequence[Rule],
                 sink_paths: Sequence[str], reactor: Any) -> None:
        super().__init__()
        self.settings = settings
        self.rules = rules
        self.sink_paths = sink_paths
        self.reactor = reactor
        self.engine: Engine | None = None
        self.follower: Follower | None = None
        self._queries = ThreadPool(1, QUERY_THREADS, "insights-queries")
        self._ingest_pool = ThreadPool(1, 1, "insights-ingest")
        self._stopping = False
        self._loop = task.LoopingCall(self._poll)
        self._loop.clock = reactor
        self._stepping: defer.Deferred[Any] | None = None
        self.reader: ThreadedReader | None = None
        self.tokens: Tokens | None = None
        self.root: Resource | None = None
        self.site = InsightsSite(InsightsRoot())
        """The listener's site; its root is the real one from :meth:`startService` on."""
        self.port: IListeningPort | None = None
        """The insights listener's port once bound."""

    def listening(self, name: str, port: IListeningPort) -> None:
        """The listener ``name`` of the site listens on ``port``."""
        self.port = port

    def startService(self) -> None:
        """Open the engine (after twistd dropped privileges, so the store's files belong to
        the gateway's user), start ingesting and serve the site on the listener (bound by
        ``privilegedStartService``, like every listener). A store that cannot be opened
        (another process holds it) stops the start with one line naming it."""
        try:
            engine = self.engine = open_engine(self.settings, self.reactor.seconds)
        except (duckdb.Error, OSError) as error:
            raise SystemExit(f"error: cannot open the insights store "
                             f"{self.settings.duckdb_path}: {error}") from None
        self._queries.start()
        self._ingest_pool.start()
        if isinstance(engine, DuckDBStore):
            self.follower = Follower(engine, self.sink_paths)
            self._loop.start(POLL_SECONDS, now=True)
        self.reader = ThreadedReader(engine, catalogue(self.rules), self._queries, self.reactor)
        tokens = self.tokens = Tokens(self.settings.tokens)
        self.root = insights_root(self.reader, tokens, self.reactor.seconds)
        ui = InsightsUI(self.reader, tokens.grant, self.reactor,
                        badges=self.settings.badges)
        ui.install(self.root)
        ui.setServiceParent(self)
        self.site.resource = self.root
        super().startService()

    def use(self, settings: InsightsConfig, rules: Sequence[Rule]) -> None:
        """After a reload: the packages of the new ``rules`` and the tokens of ``settings``
        (the engine and the listener change at a restart)."""
        if self.reader is not None:
            self.reader.use_packages(catalogue(rules))
        if self.tokens is not None:
            self.tokens.use(settings.tokens)

    def _poll(self) -> None:
        if self._stepping is not None or self.follower is None or self._stopping:
            return
        self._stepping = deferToThreadPool(
            self._threads_reactor(), self._ingest_pool, _at_low_priority, self.follower.step)
        self._stepping.addCallbacks(self._stepped, self._step_failed)

    def _threads_reactor(self) -> IReactorFromThreads:
        reactor: IReactorFromThreads = self.reactor
        return reactor

    def _stepped(self, result: StepResult) -> None:
        self._stepping = None
        metrics.INSIGHTS_EVENTS_INGESTED.inc(result.added)
        metrics.INSIGHTS_LINES_SKIPPED.inc(result.skipped)
        metrics.INSIGHTS_UNREAD_BYTES.set(result.unread)
        if result.skipped:
            log.warn("insights ingest skipped {count} corrupt lines", count=result.skipped)
        if result.sort_error is not None:
            metrics.INSIGHTS_INGEST_ERRORS.inc()
            log.error("insights sorting failed (retried): {error}", error=result.sort_error)
        if result.more and not self._stopping:
            self.reactor.callLater(0, self._poll)

    def _step_failed(self, failure: Any) -> None:
        self._stepping = None
        if failure.check(duckdb.InterruptException):
            log.info("insights ingest stopped for the shutdown; the chunk is read again at the"
                     " next start")
            return
        metrics.INSIGHTS_INGEST_ERRORS.inc()
        log.error("insights ingest failed (retried): {error}", error=failure.value)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Stop ingesting, interrupt what the store runs (a step in progress: its chunk is
        read again at the next start; queries: answered 503) every
        :data:`INTERRUPT_SECONDS` until its threads are idle, stop listening, close the
        store."""
        self._stopping = True
        if self._loop.running:
            self._loop.stop()
        interrupting = None
        if isinstance(self.engine, DuckDBStore):
            interrupting = task.LoopingCall(self.engine.interrupt)
            interrupting.clock = self.reactor
            interrupting.start(INTERRUPT_SECONDS, now=True)
        try:
            if self._stepping is not None:
                yield self._stepping
            yield super().stopService()
            engine, follower = self.engine, self.follower
            if engine is None:
                return
            while self._queries.working:  # so that stopping the pool never waits
                yield task.deferLater(self.reactor, INTERRUPT_SECONDS, lambda: None)
            self._queries.stop()
        finally:
            if interrupting is not None:
                interrupting.stop()
        if follower is not None:
            follower.close()
        yield deferToThreadPool(self._threads_reactor(), self._ingest_pool, engine.close)
        self._ingest_pool.stop()
