"""The graceful end of serving, as a service: when it stops (after the listeners stopped
accepting), answers carry ``Connection: close``, idle keep-alive connections are closed, and
requests in flight get up to the grace period to finish."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from scarfgw.gateway.gateway import Gateway
from scarfgw.http.channel import GatewayFactory

log = Logger()

POLL_SECONDS = 0.05


class Drain(Service):
    """Lets the requests of ``gateway`` finish for at most ``grace`` seconds on stop."""

    def __init__(self, clock: Any, gateway: Gateway, factories: Sequence[GatewayFactory],
                 grace: float) -> None:
        self.clock = clock
        self.gateway = gateway
        self.factories = factories
        self.grace = grace

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Close idle connections; wait while requests are in flight, up to ``grace``."""
        super().stopService()
        self.gateway.draining = True
        for factory in self.factories:
            factory.close_idle()
        deadline = self.clock.seconds() + self.grace
        while self.gateway.in_flight and self.clock.seconds() < deadline:
            yield task.deferLater(self.clock, POLL_SECONDS, lambda: None)
        if self.gateway.in_flight:
            log.warn("grace period over, {count} requests still in flight",
                     count=self.gateway.in_flight)
