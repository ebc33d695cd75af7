"""The gateway as a Twisted service: listeners, the event writer, reload on SIGHUP, and a
graceful stop (not ready -> stop accepting -> drain in-flight requests -> flush events)."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from scarfgw.analytics.geoip import GeoIP
from scarfgw.analytics.sinks import build_sinks
from scarfgw.analytics.writer import EventWriter
from scarfgw.config import Config, load_config
from scarfgw.gateway.gateway import Gateway
from scarfgw.gateway.proxy import StreamingProxy
from scarfgw.http.channel import GatewayFactory
from scarfgw.ops import metrics
from scarfgw.ops.accesslog import AccessLog
from scarfgw.ops.admin import admin_resource
from scarfgw.runtime.endpoints import reuseport_sockets
from scarfgw.runtime.workers import METRICS_DIR_VARIABLE, SharedSocket, WorkerPool
from scarfgw.tls.listener import https_factory
from scarfgw.tls.manager import TLSService

log = Logger()

_DRAIN_POLL_SECONDS = 0.05
_WORKER_STOP_MARGIN_SECONDS = 5.0
_RESTART_SECTIONS = ("listen", "events", "tls", "limits", "access_log", "workers")


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        """The admin listener keeps no access log."""


class GatewayService(MultiService):
    """Runs one gateway process from a loaded config."""

    def __init__(self, config: Config, reactor: Any, config_path: str | None = None,
                 worker_index: int = 0, inherited: Mapping[str, SharedSocket] | None = None,
                 spawn_workers: int = 1) -> None:
        super().__init__()
        self.worker_index = worker_index
        self.inherited = dict(inherited or {})
        self.reactor = reactor
        self.config = config
        self.config_path = config_path or config.source
        self.ready = False
        self.stopping = False
        self.ports: dict[str, IListeningPort] = {}
        self.gateway_factories: list[GatewayFactory] = []
        self._metrics_flush = task.LoopingCall(metrics.flush)
        self._metrics_flush.clock = reactor
        self.writer = EventWriter(
            reactor,
            build_sinks(config.events.sinks, reactor),
            batch_size=config.events.batch_size,
            flush_interval=config.events.flush_interval,
            queue_limit=config.events.queue_limit,
            spool_dir=os.path.join(config.events.spool_dir, f"worker-{worker_index}")
            if worker_index else config.events.spool_dir,
            spool_max_bytes=config.events.spool_max_bytes,
        )
        self.writer.setServiceParent(self)
        self.proxy = StreamingProxy(reactor, config.proxy)
        self.tls: TLSService | None = None
        if config.listen.https:
            self.tls = TLSService(reactor, config.tls, config.router.domains,
                                  follower=worker_index > 0)
            self.tls.setServiceParent(self)
        databases = config.events.geoip_databases
        self.geoip = GeoIP(databases) if databases else None
        access_log = AccessLog(config.access_log.sample) if config.access_log.enabled else None
        self.gateway = Gateway(config, self.writer, self.proxy, reactor, tls=self.tls,
                               geoip=self.geoip, access_log=access_log)
        self._listening: defer.Deferred[Any] | None = None
        self.worker_sockets: dict[str, list[socket.socket]] = {}
        self.workers: WorkerPool | None = None
        if spawn_workers > 1 and worker_index == 0:
            self.workers = WorkerPool(reactor, self.config_path, spawn_workers,
                                      on_exit=_forget_process_metrics)
        self._count_load("success")
        for warning in config.warnings:
            log.warn("config: {warning}", warning=warning)

    def privilegedStartService(self) -> None:
        """Bind the listeners while twistd still has its privileges (ports below 1024)."""
        super().privilegedStartService()
        self._bind()

    def startService(self) -> None:
        """Start the writer, bind the listeners (unless done already), then report ready.

        With workers, this process's metrics are written to the shared files every
        ``metrics.FLUSH_INTERVAL_SECONDS``.
        """
        super().startService()
        if metrics.MULTIPROCESS:
            self._metrics_flush.start(metrics.FLUSH_INTERVAL_SECONDS, now=False)
        self._bind().addCallbacks(self._bound, self._bind_failed)
        if hasattr(self.reactor, "callWhenRunning"):
            self.reactor.callWhenRunning(self._install_signal_handlers)

    def _bind(self) -> defer.Deferred[Any]:
        if self._listening is None:
            listen = self.config.listen
            factories: dict[str, tuple[str, Any]] = {}
            if listen.http:
                factories["http"] = (listen.http, self._gateway_factory("http"))
            if listen.https and self.tls is not None:
                https = https_factory(self.tls, self._gateway_factory("https"))
                factories["https"] = (listen.https, https)
            if listen.admin and self.worker_index == 0:
                factories["admin"] = (listen.admin, _QuietSite(admin_resource(self.is_ready)))
            self._listening = defer.gatherResults(
                [self._listen(name, spec, factory) for name, (spec, factory) in factories.items()],
                consumeErrors=True,
            )
        return self._listening

    def _gateway_factory(self, listener: str) -> GatewayFactory:
        factory = GatewayFactory(
            self.gateway.handle, listener, self.config.limits.max_body_bytes, self.reactor,
            tls=listener == "https",
        )
        self.gateway_factories.append(factory)
        return factory

    def _listen(self, name: str, spec: str, factory: Any) -> defer.Deferred[None]:
        """Listen on ``spec``: on the socket inherited from the primary (in a worker), on the
        first of one SO_REUSEPORT socket per process (in a primary with workers; the others
        are kept for the workers), or on the endpoint itself."""
        shared = self.inherited.get(name)
        if shared is None and self.workers is not None and name != "admin":
            own, *others = reuseport_sockets(spec, self.workers.count)
            self.worker_sockets[name] = others
            shared = SharedSocket(os.dup(own.fileno()), own.family)
            own.close()
        if shared is not None:
            listening = defer.succeed(
                self.reactor.adoptStreamPort(shared.fileno, shared.family, factory))
            os.close(shared.fileno)
        else:
            listening = serverFromString(self.reactor, spec).listen(factory)

        def keep(port: IListeningPort) -> None:
            self.ports[name] = port
            if name == "https":
                self.gateway.https_port = int(getattr(port.getHost(), "port", 443))
            log.info("listening for {name} on {address}", name=name, address=port.getHost())

        return listening.addCallback(keep)

    def _bound(self, _: object) -> None:
        self.ready = not self.stopping
        if self.workers is not None and not self.stopping:
            self.workers.start({
                index: {name: SharedSocket(sockets[index - 1].fileno(), sockets[index - 1].family)
                        for name, sockets in self.worker_sockets.items()}
                for index in range(1, self.workers.count)
            })

    def _bind_failed(self, failure: Any) -> None:
        log.critical("cannot listen: {error}", error=failure.value)
        if hasattr(self.reactor, "stop") and self.reactor.running:
            self.reactor.stop()

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self._on_sighup))
        signal.signal(signal.SIGUSR1, lambda *_: self.reactor.callFromThread(self._on_sigusr1))
        signal.signal(signal.SIGTERM, lambda *_: self.reactor.callFromThread(self._on_sigterm))

    def _on_sigusr1(self) -> None:
        log.info("SIGUSR1 received: reopening event files")
        self.writer.reopen()
        if self.workers is not None:
            self.workers.signal_all(signal.SIGUSR1)

    def _on_sighup(self) -> None:
        log.info("SIGHUP received")
        self.reload()
        if self.workers is not None:
            self.workers.signal_all(signal.SIGHUP)

    def _on_sigterm(self) -> None:
        """Stop gracefully and exit 0 (twistd's own handler would re-raise the signal)."""
        if self.stopping:
            log.info("SIGTERM received again: already shutting down")
            return
        log.info("SIGTERM received: shutting down gracefully")
        self.stopping = True
        self.reactor.stop()

    def is_ready(self) -> bool:
        """True while the gateway should receive traffic."""
        return self.ready and not self.stopping

    def reload(self) -> bool:
        """Load the config file again and switch to it atomically; keep the old one on error."""
        log.info("reloading config from {path}", path=self.config_path)
        try:
            config = load_config(self.config_path)
            proxy = (StreamingProxy(self.reactor, config.proxy)
                     if config.proxy != self.config.proxy else None)
        except Exception as exc:
            self._count_load("failure")
            log.error("config reload refused, still serving the previous config: {error}",
                      error=str(exc))
            return False
        for warning in config.warnings:
            log.warn("config: {warning}", warning=warning)
        for section in _RESTART_SECTIONS:
            if getattr(config, section) != getattr(self.config, section):
                log.warn("config reload: changes to {section} take effect after a restart",
                         section=section)
        if proxy is not None:
            old_proxy, self.proxy = self.proxy, proxy
            self.gateway.forwarder = proxy
            old_proxy.close()
        self.gateway.use_config(config)
        if self.tls is not None:
            self.tls.use_certificates(config.tls.certificates)
            self.tls.set_domains(config.router.domains)
        self.config = config
        self._count_load("success")
        log.info("config reloaded: {domains} domains, {rules} rules",
                 domains=len(config.router.domains), rules=len(config.rules))
        return True

    def _count_load(self, result: str) -> None:
        """Config loads are counted by the primary only (workers load the same file)."""
        if self.worker_index == 0:
            metrics.CONFIG_RELOADS.labels(result).inc()
            if result == "success":
                metrics.CONFIG_LAST_RELOAD_SUCCESS.set(self.reactor.seconds())

    def _stop_listening(self, names: Iterable[str]) -> defer.Deferred[Any]:
        ports = [self.ports[name] for name in names if name in self.ports]
        return defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in ports], consumeErrors=True
        )

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Report not ready, stop accepting, let in-flight requests finish, flush events.

        The admin listener stays open until the end, so ``/readyz`` answers 503 meanwhile;
        idle keep-alive connections are closed, busy ones get ``Connection: close`` on their
        answer.
        """
        self.stopping = True
        self.gateway.draining = True
        log.info("stopping: no longer ready, closing listeners")
        grace = self.config.shutdown_grace_period
        workers_done = (self.workers.terminate(grace + _WORKER_STOP_MARGIN_SECONDS)
                        if self.workers is not None else defer.succeed(None))
        yield self._stop_listening(name for name in self.ports if name != "admin")
        for factory in self.gateway_factories:
            factory.close_idle()
        deadline = self.reactor.seconds() + self.config.shutdown_grace_period
        while self.gateway.in_flight and self.reactor.seconds() < deadline:
            yield task.deferLater(self.reactor, _DRAIN_POLL_SECONDS, lambda: None)
        if self.gateway.in_flight:
            log.warn("grace period over, {count} requests still in flight",
                     count=self.gateway.in_flight)
        yield workers_done
        for sockets in self.worker_sockets.values():
            for sock in sockets:
                sock.close()
        yield super().stopService()
        if self._metrics_flush.running:
            self._metrics_flush.stop()
        metrics.flush()
        yield self.proxy.close()
        if self.geoip is not None:
            self.geoip.close()
        yield self._stop_listening(["admin"])
        log.info("stopped")


def _forget_process_metrics(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the shared metrics directory."""
    if pid is not None and os.environ.get(METRICS_DIR_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
