"""Worker processes serving the primary's listeners.

The primary process (``twistd scarfgw``) binds one ``SO_REUSEPORT`` socket per process for
each listener (while it still has its privileges), serves the first itself, owns ACME
ordering and the admin listener, and runs ``workers - 1`` further processes
(``python -m scarfgw.runtime.worker``), each inheriting its own sockets. The kernel spreads new
connections over the sockets. A worker that dies is started again on the same sockets,
which the primary keeps open, so no connection attempt is refused meanwhile. SIGHUP and
SIGTERM are passed on to the workers.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client keeps the metrics of every process when there are workers."""
READY_LINE = "scarfgw-worker-ready"
"""Printed by a worker once its signal handlers are installed."""
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


class _WorkerProtocol(protocol.ProcessProtocol):
    """Relays a worker's log lines and reports its end to the pool."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.ready = False
        self.held_signals: list[int] = []
        self._partial = b""

    def send(self, signum: int) -> None:
        """Deliver ``signum`` now, or once the worker can handle it (a SIGHUP or SIGUSR1
        that reached a starting worker would kill it)."""
        if not self.ready and signum in (signal.SIGHUP, signal.SIGUSR1):
            self.held_signals.append(signum)
        elif self.transport is not None and self.transport.pid is not None:
            self.transport.signalProcess(signum)

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace").strip()
            if text == READY_LINE:
                self.ready = True
                for signum in self.held_signals:
                    self.send(signum)
                self.held_signals.clear()
            elif text:
                log.info("worker {index}: {line}", index=self.index, line=text)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.pool.ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """Starts, supervises and stops the worker processes of one primary."""

    def __init__(self, reactor: Any, config_path: str, count: int,
                 on_exit: Any = None) -> None:
        self.reactor = reactor
        self.config_path = config_path
        self.count = count
        self.on_exit = on_exit
        self.sockets: Mapping[int, Mapping[str, SharedSocket]] = {}
        self.workers: dict[int, _WorkerProtocol] = {}
        self.stopping = False

    def start(self, sockets: Mapping[int, Mapping[str, SharedSocket]]) -> None:
        """Start workers 1..count-1, worker i serving ``sockets[i]`` (listener -> socket).

        The primary keeps every socket open, so while a worker is being replaced its
        connections wait in the socket's backlog instead of being refused.
        """
        self.sockets = sockets
        for index in range(1, self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        args = [sys.executable, "-m", "scarfgw.runtime.worker", "--config", self.config_path,
                "--index", str(index)]
        for offset, (name, shared) in enumerate(sorted(self.sockets[index].items())):
            child_fd = FIRST_INHERITED_FD + offset
            child_fds[child_fd] = shared.fileno
            args += ["--inherit", inherit_argument(name, child_fd, shared.family)]
        worker = _WorkerProtocol(self, index)
        self.workers[index] = worker
        self.reactor.spawnProcess(worker, sys.executable, args, env=dict(os.environ),
                                  childFDs=child_fds)
        log.info("started worker {index}", index=index)

    def ended(self, worker: _WorkerProtocol, reason: Failure) -> None:
        """A worker exited: forget it, and start it again unless we are stopping."""
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.on_exit is not None and worker.transport is not None:
            self.on_exit(worker.transport.pid)
        if self.stopping:
            log.info("worker {index} stopped", index=worker.index)
            return
        log.warn("worker {index} exited ({reason}); starting it again",
                 index=worker.index, reason=reason.value)
        self.reactor.callLater(RESPAWN_DELAY_SECONDS, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and index not in self.workers:
            self._spawn(index)

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running worker."""
        for worker in list(self.workers.values()):
            worker.send(signum)

    def terminate(self, grace: float) -> defer.Deferred[Any]:
        """SIGTERM every worker; SIGKILL those still running after ``grace`` seconds."""
        self.stopping = True
        running = list(self.workers.values())
        self.signal_all(signal.SIGTERM)
        killer = self.reactor.callLater(grace, self.signal_all, signal.SIGKILL)
        done = defer.gatherResults([worker.ended for worker in running])

        def stop_killer(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        return done.addBoth(stop_killer)
