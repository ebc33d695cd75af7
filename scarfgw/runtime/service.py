"""One gateway process, wired for its role: :func:`primary_service` (``twistd scarfgw``: the
config file, the admin listener, certificate orders, the workers) or :func:`worker_service`
(``python -m scarfgw.runtime.worker``: serves inherited sockets with what the primary hands
it).

A process is a :class:`GatewayProcess`, a tree of small services. Its children start in
this order and stop in the reverse one, each group after the next has finished:

- ``admin``: the admin listener (primary; closed last, so ``/readyz`` says 503 meanwhile);
- ``resources``: the event writer, TLS, the metrics flush, the proxy and GeoIP closers, the
  replay of orphaned worker spools (primary); another subsystem joins here in one line;
- ``traffic``: the listeners then the drain (stop: stop accepting, then let requests in
  flight finish), beside the worker pool (stopped at the same time);
- ``signals``: SIGHUP reloads (primary), SIGUSR1 reopens event files, SIGTERM stops.

Requests are answered from one :class:`~scarfgw.runtime.snapshot.Snapshot`; a reload builds
a complete new one and swaps the gateway's reference (:meth:`GatewayProcess.apply`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from scarfgw.analytics.geoip import GeoIP
from scarfgw.analytics.sinks import build_sinks
from scarfgw.analytics.writer import EventWriter
from scarfgw.config import Config, ConfigError, load_config
from scarfgw.gateway.gateway import Gateway
from scarfgw.gateway.proxy import StreamingProxy
from scarfgw.http.channel import GatewayFactory
from scarfgw.insights.settings import jsonl_sink_paths
from scarfgw.ops import metrics
from scarfgw.ops.accesslog import AccessLog
from scarfgw.ops.admin import admin_resource
from scarfgw.ops.sharedmetrics import METRICS_DIR_VARIABLE
from scarfgw.runtime.control import HandConfig
from scarfgw.runtime.drain import Drain
from scarfgw.runtime.listeners import Listener, Listeners
from scarfgw.runtime.sequence import SequentialService
from scarfgw.runtime.signals import Signals
from scarfgw.runtime.snapshot import Snapshot, certificate_domains
from scarfgw.runtime.spools import OrphanSpools, worker_spool_dir
from scarfgw.runtime.workers import SharedSocket, WorkerPool
from scarfgw.tls.listener import https_factory
from scarfgw.tls.manager import TLSService

if TYPE_CHECKING:  # imported where used: DuckDB and Jinja2 load only where insights runs
    from scarfgw.insights.service import InsightsService

log = Logger()

WORKER_STOP_MARGIN_SECONDS = 5.0
RESTART_SECTIONS = ("listen", "events", "tls", "limits", "access_log", "workers", "insights")
"""Sections a reload cannot change in a running process (a warning says so)."""
PRIMARY = "primary"


class _QuietSite(Site):
    def log(self, request: Any) -> None:
        """The admin listener keeps no access log."""


class _Closer(Service):
    """Closes what the process holds open (the proxy's pooled connections, GeoIP files)."""

    def __init__(self, process: GatewayProcess) -> None:
        self.process = process

    def stopService(self) -> defer.Deferred[None]:
        """Close them; fires once the proxy's connections are closed."""
        super().stopService()
        if self.process.geoip is not None:
            self.process.geoip.close()
        return self.process.gateway.snapshot.forwarder.close()


class GatewayProcess(SequentialService):
    """The services of one gateway process; built by :func:`primary_service` or
    :func:`worker_service`, which fill ``admin`` and ``workers`` as the role needs."""

    def __init__(self, config: Config, reactor: Any, index: int = 0, generation: int = 1,
                 inherited: Mapping[str, SharedSocket] | None = None) -> None:
        super().__init__()
        self.reactor = reactor
        self.index = index
        self.stopping = False
        self.label = PRIMARY if index == 0 else f"worker-{index}"
        self.admin = MultiService()
        self.admin.setServiceParent(self)
        self.resources = MultiService()
        self.resources.setServiceParent(self)
        self.traffic = MultiService()
        self.traffic.setServiceParent(self)
        self.workers: WorkerPool | None = None
        self.admin_listener: Listeners | None = None
        self.config_file: ConfigFile | None = None
        self.insights: InsightsService | None = None
        if index == 0:
            OrphanSpools(reactor, config.events, config.workers).setServiceParent(self.resources)
        self.writer = _writer(config, reactor, index)
        self.writer.setServiceParent(self.resources)
        self.tls: TLSService | None = None
        if config.listen.https:
            self.tls = TLSService(reactor, config.tls, certificate_domains(config),
                                  follower=index > 0, on_installed=self._certificate_installed)
            self.tls.setServiceParent(self.resources)
        databases = config.events.geoip_databases
        self.geoip = GeoIP(databases, config.events.geoip_overrides) if databases else None
        access_log = AccessLog(config.access_log.sample) if config.access_log.enabled else None
        self.gateway = Gateway(Snapshot(config, generation, StreamingProxy(reactor, config.proxy)),
                               self.writer, reactor, tls=self.tls, geoip=self.geoip,
                               access_log=access_log)
        _Closer(self).setServiceParent(self.resources)
        if metrics.MULTIPROCESS:
            flush = TimerService(metrics.FLUSH_INTERVAL_SECONDS, metrics.flush)
            flush.clock = reactor
            flush.setServiceParent(self.resources)
        self.factories: list[GatewayFactory] = []
        share_with = config.workers if index == 0 else 1
        self.listeners = Listeners(reactor, self._gateway_listeners(config), inherited,
                                   share_with, bound=self._bound)
        serving = SequentialService()
        Drain(reactor, self.gateway, self.factories, config.shutdown_grace_period
              ).setServiceParent(serving)
        self.listeners.setServiceParent(serving)
        serving.setServiceParent(self.traffic)
        self._note_generation()
        for warning in config.warnings:
            log.warn("config: {warning}", warning=warning)

    # -- what the process serves ------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot new requests are answered with."""
        return self.gateway.snapshot

    @property
    def config(self) -> Config:
        """The configuration being served."""
        return self.gateway.snapshot.config

    @property
    def proxy(self) -> StreamingProxy:
        """The streaming proxy of the current snapshot."""
        return self.gateway.snapshot.forwarder

    def apply(self, config: Config, generation: int) -> None:
        """Serve ``config`` as ``generation`` from now on: build the whole snapshot, then swap
        the one reference (requests in flight finish with the old one)."""
        old = self.gateway.snapshot
        same_proxy = config.proxy == old.config.proxy
        forwarder = old.forwarder if same_proxy else StreamingProxy(self.reactor, config.proxy)
        for warning in config.warnings:
            log.warn("config: {warning}", warning=warning)
        for section in RESTART_SECTIONS:
            if _fixed_part(config, section) != _fixed_part(old.config, section):
                log.warn("config reload: changes to {section} take effect after a restart",
                         section=section)
        packuments = old.packuments if same_proxy else None
        self.gateway.use(Snapshot(config, generation, forwarder, packuments))
        if self.tls is not None:
            self.tls.use_certificates(config.tls.certificates)
            self.tls.set_domains(certificate_domains(config))
        if self.insights is not None:
            self.insights.use(config.insights, config.rules)
        if not same_proxy:
            old.forwarder.close()
        self._note_generation()
        log.info("config generation {generation} applied: {domains} domains, {rules} rules",
                 generation=generation, domains=len(config.router.domains),
                 rules=len(config.rules))

    def _note_generation(self) -> None:
        if self.index == 0:
            metrics.CONFIG_GENERATION.labels(self.label).set(self.snapshot.generation)

    # -- listeners --------------------------------------------------------------------------

    def _gateway_listeners(self, config: Config) -> list[Listener]:
        listen, backlog = config.listen, config.limits.listen_backlog
        listeners = []
        if listen.http:
            listeners.append(Listener("http", listen.http, self._gateway_factory("http", config),
                                      backlog))
        if listen.https and self.tls is not None:
            inner = self._gateway_factory("https", config)
            listeners.append(Listener("https", listen.https, https_factory(self.tls, inner),
                                      backlog))
        return listeners

    def _gateway_factory(self, name: str, config: Config) -> GatewayFactory:
        limits = config.limits
        factory = GatewayFactory(self.gateway.handle, name, limits.max_body_bytes, self.reactor,
                                 tls=name == "https", timeout=limits.client_timeout,
                                 max_connections=limits.max_connections)
        self.factories.append(factory)
        return factory

    def _bound(self, name: str, port: IListeningPort) -> None:
        if name == "https":
            self.gateway.https_port = int(getattr(port.getHost(), "port", 443))

    @property
    def ports(self) -> dict[str, IListeningPort]:
        """Every listening port of this process, by listener name."""
        admin = self.admin_listener.ports if self.admin_listener is not None else {}
        return {**self.listeners.ports, **admin}

    # -- readiness and stop -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while this process and every worker serve the current generation."""
        bound = len(self.listeners.ports) == len(self.listeners.listeners)
        workers = self.workers is None or self.workers.in_step()
        return bool(self.running) and bound and workers and not self.stopping

    def is_ready(self) -> bool:
        """:attr:`ready`, for ``/readyz``."""
        return self.ready

    def reopen(self) -> None:
        """Reopen event files (SIGUSR1, after logrotate), in the workers too."""
        log.info("SIGUSR1 received: reopening event files")
        self.writer.reopen()
        if self.workers is not None:
            self.workers.signal_all(signal.SIGUSR1)

    def terminate(self) -> None:
        """SIGTERM: stop gracefully and exit 0 (twistd's own handler would re-raise it)."""
        if self.stopping:
            log.info("SIGTERM received again: already shutting down")
            return
        log.info("SIGTERM received: shutting down gracefully")
        self.stopping = True
        self.reactor.stop()

    def _certificate_installed(self, domain: str) -> None:
        if self.workers is not None:
            self.workers.certificate_stored(domain)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Not ready at once; then stop in the order described in the module docstring."""
        self.stopping = True
        log.info("stopping: no longer ready, closing listeners")
        yield super().stopService()
        metrics.flush()
        log.info("stopped")


def _fixed_part(config: Config, section: str) -> object:
    """What a reload cannot change of ``section`` (insights: all but its tokens and domain,
    which a reload applies)."""
    if section == "insights":
        return dataclasses.replace(config.insights, tokens=(), domain=None)
    return getattr(config, section)


def _writer(config: Config, reactor: Any, index: int) -> EventWriter:
    events = config.events
    return EventWriter(
        reactor, build_sinks(events.sinks, reactor), batch_size=events.batch_size,
        flush_interval=events.flush_interval, queue_limit=events.queue_limit,
        spool_dir=worker_spool_dir(events.spool_dir, index),
        spool_max_bytes=events.spool_max_bytes,
    )


class ConfigFile:
    """The primary's config file: reloaded on SIGHUP, validated, applied here and handed to
    every worker; a broken file is refused and the previous configuration kept everywhere."""

    def __init__(self, path: str, process: GatewayProcess) -> None:
        self.path = path
        self.process = process
        self.generation = 1
        self._count("success")

    def current(self) -> HandConfig:
        """What the workers are handed: the current generation's documents."""
        documents = self.process.config.documents
        assert documents is not None, "a config read from a file keeps its documents"
        return HandConfig(self.generation, documents)

    def reload(self) -> bool:
        """Load the file again and switch every process to it; keep the old one on error."""
        log.info("reloading config from {path}", path=self.path)
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            self._count("failure")
            log.error("config reload refused, still serving the previous config: {error}",
                      error=str(exc))
            return False
        self.generation += 1
        self.process.apply(config, self.generation)
        self._count("success")
        if self.process.workers is not None:
            self.process.workers.hand_over(self.current())
        return True

    def _count(self, result: str) -> None:
        metrics.CONFIG_RELOADS.labels(result).inc()
        if result == "success":
            metrics.CONFIG_LAST_RELOAD_SUCCESS.set(self.process.reactor.seconds())


def primary_service(config: Config, reactor: Any, config_path: str | None = None
                    ) -> GatewayProcess:
    """The primary process: serves, owns the admin listener, the config file, certificate
    orders and the ``config.workers - 1`` worker processes.

    A subsystem of the primary only (e.g. the insights read side) joins as one child of
    ``process.resources``: started after the writer and TLS, stopped once traffic drained.
    """
    process = GatewayProcess(config, reactor)
    config_file = process.config_file = ConfigFile(config_path or config.source, process)
    if config.listen.admin:
        process.admin_listener = Listeners(reactor, [Listener(
            "admin", config.listen.admin, _QuietSite(admin_resource(process.is_ready)))])
        process.admin_listener.setServiceParent(process.admin)
    if config.listen.insights:
        from scarfgw.insights.service import InsightsService  # not in workers (memory)
        insights = process.insights = InsightsService(
            config.insights, config.rules, jsonl_sink_paths(config.events.sinks), reactor)
        Listeners(reactor, [Listener("insights", config.listen.insights, insights.site)],
                  bound=insights.listening).setServiceParent(insights)
        insights.setServiceParent(process.resources)
    if config.workers > 1:
        process.workers = WorkerPool(
            reactor, config.workers, process.listeners.worker_sockets, process.listeners.cover,
            config.shutdown_grace_period + WORKER_STOP_MARGIN_SECONDS,
            on_exit=_forget_process_metrics)
        process.workers.hand_over(config_file.current())
        process.workers.setServiceParent(process.traffic)
    Signals(reactor, {
        signal.SIGHUP: config_file.reload,
        signal.SIGUSR1: process.reopen,
        signal.SIGTERM: process.terminate,
    }).setServiceParent(process)
    return process


def worker_service(config: Config, generation: int, reactor: Any, index: int,
                   inherited: Mapping[str, SharedSocket]) -> GatewayProcess:
    """Worker ``index``: serves the sockets it inherited with the configuration the primary
    handed it; follows the primary's certificates."""
    process = GatewayProcess(config, reactor, index, generation, inherited)
    Signals(reactor, {
        signal.SIGHUP: lambda: log.info("SIGHUP ignored: the primary hands workers the config"),
        signal.SIGUSR1: process.reopen,
        signal.SIGTERM: process.terminate,
    }).setServiceParent(process)
    return process


def _forget_process_metrics(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the shared metrics directory."""
    if pid is not None and os.environ.get(METRICS_DIR_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
