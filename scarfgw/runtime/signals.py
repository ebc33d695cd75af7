"""Signal handlers as a service: installed once the reactor runs (after Twisted's own), each
running its action on the reactor thread."""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service


class Signals(Service):
    """Runs ``actions[signum]()`` on the reactor thread when ``signum`` arrives (what it
    returns is ignored)."""

    def __init__(self, reactor: Any, actions: Mapping[int, Callable[[], object]]) -> None:
        self.reactor = reactor
        self.actions = actions

    def startService(self) -> None:
        """Install the handlers once the reactor runs."""
        super().startService()
        if hasattr(self.reactor, "callWhenRunning"):
            self.reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        for signum, action in self.actions.items():
            signal.signal(signum, self._handler(action))

    def _handler(self, action: Callable[[], object]) -> Callable[[int, Any], None]:
        return lambda _signum, _frame: self.reactor.callFromThread(action)
