"""Worker processes serving the primary's listeners.

The primary process (``twistd scarfgw``) binds one ``SO_REUSEPORT`` socket per process for
each listener (while it still has its privileges), serves the first itself, owns ACME
ordering, the admin listener and the config file, and runs ``workers - 1`` further processes
(``python -m scarfgw.runtime.worker``), each inheriting its own sockets. The kernel spreads new
connections over the sockets.

Each worker is handed the current configuration on its stdin when it starts and again on
every reload (:mod:`scarfgw.runtime.control`), and reports on its stdout which generation it
applied. A worker that dies is started again with the current configuration; until it
serves again the primary serves its sockets itself (``cover``), so no connection waits for
it. SIGUSR1 and SIGTERM are passed on to the workers.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from scarfgw.ops import metrics
from scarfgw.runtime.control import (
    READY_LINE,
    CertificateStored,
    HandConfig,
    Message,
    frame,
    parse_result_line,
)

log = Logger()

RESPAWN_DELAY_SECONDS = 1.0
FIRST_INHERITED_FD = 3


@dataclass(frozen=True)
class SharedSocket:
    """A listening socket of the primary: its descriptor and address family."""

    fileno: int
    family: int


def inherit_argument(name: str, child_fd: int, family: int) -> str:
    """The ``--inherit`` value telling a worker which descriptor serves which listener."""
    return f"{name}={child_fd}:{family}"


def parse_inherit_argument(value: str) -> tuple[str, SharedSocket]:
    """Inverse of :func:`inherit_argument` (raises ValueError on malformed input)."""
    name, _, rest = value.partition("=")
    fd, _, family = rest.partition(":")
    if not name or not fd.isdigit() or not family.isdigit():
        raise ValueError(f"expected NAME=FD:FAMILY, got {value!r}")
    return name, SharedSocket(int(fd), int(family))


def worker_label(index: int) -> str:
    """How metrics and logs name worker ``index``."""
    return f"worker-{index}"


class _WorkerProtocol(protocol.ProcessProtocol):
    """One worker process: its stdin takes control frames, its stdout gives log lines and
    results; its end is reported to the pool."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.ready = False
        self.generation = 0
        self.held_signals: list[int] = []
        self.pid: int | None = None
        """The process id, kept for after its end (Twisted clears the transport's first)."""
        self._partial = b""

    def connectionMade(self) -> None:
        """The process runs: keep its id."""
        assert self.transport is not None
        self.pid = self.transport.pid

    def tell(self, message: Message) -> None:
        """Write ``message`` to the worker's stdin."""
        if self.transport is not None:
            self.transport.write(frame(message))

    def send(self, signum: int) -> None:
        """Deliver ``signum`` now, or once the worker can handle it (a SIGUSR1 that reached a
        starting worker, before its handler is installed, would kill it)."""
        if not self.ready and signum == signal.SIGUSR1:
            self.held_signals.append(signum)
        elif self.transport is not None and self.transport.pid is not None:
            self.transport.signalProcess(signum)

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace").strip()
            result = parse_result_line(text)
            if result is not None:
                self.pool.result(self, result.generation, result.error)
            elif text == READY_LINE:
                self.ready = True
                for signum in self.held_signals:
                    self.send(signum)
                self.held_signals.clear()
                self.pool.serving(self)
            elif text:
                log.info("worker {index}: {line}", index=self.index, line=text)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.pool.ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """Starts, supervises, configures and stops the worker processes of one primary.

    ``sockets()`` gives, once the listeners are bound, worker index -> listener -> socket;
    ``cover(index)`` starts serving a missing worker's sockets in the primary and returns
    the function that stops it again.
    """

    def __init__(self, reactor: Any, count: int,
                 sockets: Callable[[], Mapping[int, Mapping[str, SharedSocket]]],
                 cover: Callable[[int], Callable[[], None]], stop_timeout: float,
                 on_exit: Callable[[int | None], None] | None = None) -> None:
        self.reactor = reactor
        self.count = count
        self.stop_timeout = stop_timeout
        self.sockets = sockets
        self.cover = cover
        self.on_exit = on_exit
        self.workers: dict[int, _WorkerProtocol] = {}
        self.current: HandConfig | None = None
        self.stopping = False
        self._covers: dict[int, Callable[[], None]] = {}

    def hand_over(self, config: HandConfig) -> None:
        """Make ``config`` current: tell every running worker; workers started later get it
        at their start."""
        self.current = config
        for worker in list(self.workers.values()):
            worker.tell(config)

    def certificate_stored(self, domain: str) -> None:
        """Tell every running worker that storage holds a new certificate for ``domain``."""
        for worker in list(self.workers.values()):
            worker.tell(CertificateStored(domain))

    def in_step(self) -> bool:
        """True when every worker runs, serves, and serves the current generation."""
        current = self.current.generation if self.current is not None else 0
        return len(self.workers) == self.count - 1 and all(
            worker.ready and worker.generation == current for worker in self.workers.values())

    def startService(self) -> None:
        """Start workers 1..count-1 on their sockets, each with the current configuration.

        The primary keeps every socket open, so while a worker is being replaced its
        connections are served by the primary instead of being refused.
        """
        super().startService()
        for index in range(1, self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        args = [sys.executable, "-m", "scarfgw.runtime.worker", "--index", str(index)]
        for offset, (name, shared) in enumerate(sorted(self.sockets()[index].items())):
            child_fd = FIRST_INHERITED_FD + offset
            child_fds[child_fd] = shared.fileno
            args += ["--inherit", inherit_argument(name, child_fd, shared.family)]
        worker = _WorkerProtocol(self, index)
        self.workers[index] = worker
        self.reactor.spawnProcess(worker, sys.executable, args, env=dict(os.environ),
                                  childFDs=child_fds)
        if self.current is not None:
            worker.tell(self.current)
        log.info("started worker {index}", index=index)

    def result(self, worker: _WorkerProtocol, generation: int, error: str | None) -> None:
        """A worker applied (``error`` None) or refused configuration ``generation``."""
        label = worker_label(worker.index)
        if error is None:
            worker.generation = generation
            metrics.CONFIG_GENERATION.labels(label).set(generation)
            metrics.WORKER_CONFIG_RESULTS.labels(label, "applied").inc()
        else:
            metrics.WORKER_CONFIG_RESULTS.labels(label, "refused").inc()
            log.error("worker {index} refused configuration {generation}, it still serves "
                      "{serving}: {error}", index=worker.index, generation=generation,
                      serving=worker.generation, error=error)

    def serving(self, worker: _WorkerProtocol) -> None:
        """A worker serves its sockets: the primary stops covering for it."""
        uncover = self._covers.pop(worker.index, None)
        if uncover is not None:
            uncover()

    def ended(self, worker: _WorkerProtocol, reason: Failure) -> None:
        """A worker exited: forget it, and start it again unless we are stopping."""
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.on_exit is not None:
            self.on_exit(worker.pid)
        if self.stopping:
            log.info("worker {index} stopped", index=worker.index)
            return
        log.warn("worker {index} exited ({reason}); serving its sockets here and starting "
                 "it again", index=worker.index, reason=reason.value)
        if worker.index not in self._covers:
            self._covers[worker.index] = self.cover(worker.index)
        self.reactor.callLater(RESPAWN_DELAY_SECONDS, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and index not in self.workers:
            self._spawn(index)

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running worker."""
        for worker in list(self.workers.values()):
            worker.send(signum)

    def stopService(self) -> defer.Deferred[Any]:
        """Stop every worker (:meth:`terminate` after ``stop_timeout``)."""
        super().stopService()
        return self.terminate(self.stop_timeout)

    def terminate(self, grace: float) -> defer.Deferred[Any]:
        """SIGTERM every worker; SIGKILL those still running after ``grace`` seconds."""
        self.stopping = True
        for uncover in self._covers.values():
            uncover()
        self._covers.clear()
        running = list(self.workers.values())
        self.signal_all(signal.SIGTERM)
        killer = self.reactor.callLater(grace, self.signal_all, signal.SIGKILL)
        done = defer.gatherResults([worker.ended for worker in running])

        def stop_killer(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        return done.addBoth(stop_killer)
