"""Entry point of a worker process (``python -m scarfgw.runtime.worker``), started by the primary.

A worker serves the listening sockets it inherited, with its own event writer (its spool
under ``events.spool_dir/worker-N``) and certificates read from the shared TLS storage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from twisted.logger import globalLogBeginner, textFileLogObserver

from scarfgw.config import ConfigError, load_config
from scarfgw.runtime.reactor import install_unless_chosen
from scarfgw.runtime.workers import READY_LINE, SharedSocket, parse_inherit_argument


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker until SIGTERM; exit status 0 after a graceful stop."""
    parser = argparse.ArgumentParser(prog="scarfgw.runtime.worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--inherit", action="append", default=[], type=parse_inherit_argument)
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout, timeFormat=None)],
                                     redirectStandardIO=False)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 1
    install_unless_chosen()
    from twisted.internet import reactor

    from scarfgw.runtime.allocator import tune_allocator
    from scarfgw.runtime.service import GatewayService

    tune_allocator()

    inherited: dict[str, SharedSocket] = dict(args.inherit)
    service = GatewayService(config, reactor, args.config, worker_index=args.index,
                             inherited=inherited)

    def start() -> None:
        service.startService()
        print(READY_LINE, flush=True)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
