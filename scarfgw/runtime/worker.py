"""Entry point of a worker process (``python -m scarfgw.runtime.worker``), started by the primary.

A worker serves the listening sockets it inherited, with its own event writer (its spool
under ``events.spool_dir/worker-N``). It reads no config file: it waits on its stdin for the
configuration the primary hands it (:mod:`scarfgw.runtime.control`), starts serving with it,
applies every later one, and reports each result on its stdout. Certificates it loads from
the shared storage when the primary says one was stored. It stops gracefully on SIGTERM, and
when the primary closes its stdin.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from scarfgw.config import ConfigError, parse_documents
from scarfgw.runtime.control import (
    READY_LINE,
    CertificateStored,
    ConfigResult,
    ControlReceiver,
    HandConfig,
    Message,
    result_line,
)
from scarfgw.runtime.reactor import install_unless_chosen
from scarfgw.runtime.workers import SharedSocket, parse_inherit_argument

if TYPE_CHECKING:
    from scarfgw.runtime.service import GatewayProcess

log = Logger()


class _Worker:
    """Turns the primary's messages into a running :class:`GatewayProcess`."""

    def __init__(self, reactor: Any, index: int, inherited: dict[str, SharedSocket]) -> None:
        self.reactor = reactor
        self.index = index
        self.inherited = inherited
        self.process: GatewayProcess | None = None

    def receive(self, message: Message) -> None:
        """Apply a configuration (starting to serve with the first) or load a certificate."""
        if isinstance(message, CertificateStored):
            if self.process is not None and self.process.tls is not None:
                self.process.tls.certificate_stored(message.domain)
            return
        self._configure(message)

    def _configure(self, message: HandConfig) -> None:
        try:
            config = parse_documents(message.documents)
            if self.process is None:
                self._start(config, message.generation)
            else:
                self.process.apply(config, message.generation)
        except ConfigError as exc:
            _report(ConfigResult(message.generation, str(exc)))
            return
        except Exception as exc:
            log.failure("configuration {generation} could not be applied",
                        generation=message.generation)
            _report(ConfigResult(message.generation, f"{type(exc).__name__}: {exc}"))
            return
        _report(ConfigResult(message.generation))
        if self.process is not None and self.process.running:
            print(READY_LINE, flush=True)

    def _start(self, config: Any, generation: int) -> None:
        from scarfgw.runtime.service import worker_service

        process = worker_service(config, generation, self.reactor, self.index, self.inherited)
        self.process = process
        process.privilegedStartService()
        process.startService()
        self.reactor.addSystemEventTrigger("before", "shutdown", process.stopService)

    def primary_gone(self) -> None:
        """The primary closed our stdin: stop gracefully."""
        if self.reactor.running:
            log.info("the primary closed the control pipe: stopping")
            self.reactor.stop()


def _report(result: ConfigResult) -> None:
    print(result_line(result), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker until SIGTERM (or the primary goes); exit status 0 after a graceful
    stop."""
    parser = argparse.ArgumentParser(prog="scarfgw.runtime.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--inherit", action="append", default=[], type=parse_inherit_argument)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout, timeFormat=None)],
                                     redirectStandardIO=False)
    install_unless_chosen()
    from twisted.internet import reactor, stdio

    from scarfgw.runtime.allocator import tune_allocator

    tune_allocator()
    worker = _Worker(reactor, args.index, dict(args.inherit))
    # stdin only: stdout stays a plain blocking file for the log and the result lines
    reactor.callWhenRunning(stdio.StandardIO, ControlReceiver(worker.receive, worker.primary_gone),
                            stdout=os.open(os.devnull, os.O_WRONLY))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
