"""Every Prometheus metric of scarfgw, defined once (names follow Prometheus conventions).

With several workers the values of every process are summed (gauges: live sum, or the
maximum for timestamps) through prometheus-client's multiprocess mode. No label takes
unbounded values: ``kind`` is a rule kind, ``code`` an HTTP status,
``method`` one of a fixed set, ``domain`` only configured TLS domains.

The per-request, per-connection and per-event updates (:func:`request_started`,
:func:`request_finished`, :func:`connection_opened`, :func:`connection_closed`,
:func:`event_queued`) cost a few additions: they are kept in plain numbers and added to the
metrics by :func:`flush`. In a single process that happens whenever the registry is read (a
scrape), so a scrape is exact; with workers each process flushes every
:data:`FLUSH_INTERVAL_SECONDS`, as another process reads the values from their files. Call
them, and read the registry, from the reactor thread only (the admin resource does).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY: Final = CollectorRegistry(auto_describe=True)

MULTIPROCESS: bool = values.ValueClass is not values.MutexValue
"""True when values live in ``PROMETHEUS_MULTIPROC_DIR`` files (several workers)."""


class _Flushed(Collector):
    """Registers ``metric`` so that pending local updates are added before it is read."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def describe(self) -> Iterable[Metric]:
        """The metric's description (its names, for the registry's duplicate check)."""
        return self.metric.describe()

    def collect(self) -> Iterable[Metric]:
        """The metric's samples, pending updates included."""
        flush()
        return self.metric.collect()


def _register(metric: Any) -> None:
    REGISTRY.register(_Flushed(metric))


KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The ``method`` label value: known methods as they are, anything else ``OTHER``."""
    return method if method in KNOWN_METHODS else "OTHER"


HTTP_REQUESTS: Final = Counter(
    "scarfgw_http_requests", "Requests answered, by status code, method and rule kind.",
    ["code", "method", "kind"], registry=None,
)
_register(HTTP_REQUESTS)
_REQUEST_CHILDREN: Final[dict[tuple[int, bytes, str], Any]] = {}
_REQUEST_CHILDREN_LIMIT: Final = 1024


def _request_child(key: tuple[int, bytes, str]) -> Any:
    """The ``scarfgw_http_requests_total`` child of ``(status, method, kind)`` (cached:
    ``labels()`` costs several microseconds)."""
    child = _REQUEST_CHILDREN.get(key)
    if child is None:
        status, method, kind = key
        child = HTTP_REQUESTS.labels(str(status), method_label(method.decode("ascii", "replace")),
                                     kind)
        if len(_REQUEST_CHILDREN) < _REQUEST_CHILDREN_LIMIT:
            _REQUEST_CHILDREN[key] = child
    return child


def count_request(status: int, method: bytes, kind: str) -> None:
    """Add one to ``scarfgw_http_requests_total`` (see :func:`request_finished`)."""
    _request_child((status, method, kind)).inc()


_DURATION_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                            1, 2.5, 5, 10, 30, 60, 300)
HTTP_REQUEST_DURATION: Final = Histogram(
    "scarfgw_http_request_duration_seconds",
    "Time from request received to response finished.",
    buckets=_DURATION_BUCKETS,
    registry=None,
)
_register(HTTP_REQUEST_DURATION)
HTTP_IN_FLIGHT: Final = Gauge(
    "scarfgw_http_requests_in_flight", "Requests being answered.", registry=None,
    multiprocess_mode="livesum",
)
_register(HTTP_IN_FLIGHT)
OPEN_CONNECTIONS: Final = Gauge(
    "scarfgw_open_connections", "Open client connections per listener.", ["listener"],
    registry=None, multiprocess_mode="livesum",
)
_register(OPEN_CONNECTIONS)
CONNECTIONS_REJECTED: Final = Counter(
    "scarfgw_connections_rejected", "Client connections closed at once because the listener "
    "had limits.max_connections open.", ["listener"], registry=REGISTRY,
)
HTTP_RESPONSE_BYTES: Final = Counter(
    "scarfgw_http_response_bytes", "Response body bytes sent to clients.", registry=None,
)
_register(HTTP_RESPONSE_BYTES)
UPSTREAM_DURATION: Final = Histogram(
    "scarfgw_upstream_request_duration_seconds",
    "Time until an upstream answered with response headers.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
UPSTREAM_ERRORS: Final = Counter(
    "scarfgw_upstream_errors", "Upstream requests that failed, by reason.", ["reason"],
    registry=REGISTRY,
)
EVENTS_QUEUED: Final = Counter(
    "scarfgw_events_queued", "Analytics events accepted by the writer.", registry=None,
)
_register(EVENTS_QUEUED)
EVENTS_WRITTEN: Final = Counter(
    "scarfgw_events_written", "Analytics events a sink confirmed.", ["sink"], registry=REGISTRY,
)
EVENTS_SPOOLED: Final = Counter(
    "scarfgw_events_spooled", "Analytics events written to the disk spool.", registry=REGISTRY,
)
EVENTS_DROPPED: Final = Counter(
    "scarfgw_events_dropped", "Analytics events lost, by reason.", ["reason"], registry=REGISTRY,
)
EVENTS_QUEUE_DEPTH: Final = Gauge(
    "scarfgw_events_queue_depth", "Analytics events held in memory.", registry=REGISTRY,
    multiprocess_mode="livesum",
)
CONFIG_RELOADS: Final = Counter(
    "scarfgw_config_reloads", "Configuration reloads, by result.", ["result"], registry=REGISTRY,
)
CONFIG_LAST_RELOAD_SUCCESS: Final = Gauge(
    "scarfgw_config_last_reload_success_timestamp_seconds",
    "Unix time of the last successful configuration load.", registry=REGISTRY,
    multiprocess_mode="max",
)
CONFIG_GENERATION: Final = Gauge(
    "scarfgw_config_generation",
    "The configuration generation each process serves (1 at start, +1 per applied reload): "
    "set by the primary for itself and from each worker's report.",
    ["process"], registry=REGISTRY, multiprocess_mode="max",
)
WORKER_CONFIG_RESULTS: Final = Counter(
    "scarfgw_worker_config_results",
    "Configurations the primary handed to a worker, by the worker's result (applied, refused).",
    ["worker", "result"], registry=REGISTRY,
)
INSIGHTS_EVENTS_INGESTED: Final = Counter(
    "scarfgw_insights_events_ingested", "Events the insights store took from the JSONL files.",
    registry=REGISTRY,
)
INSIGHTS_LINES_SKIPPED: Final = Counter(
    "scarfgw_insights_lines_skipped",
    "JSONL lines the insights ingest skipped (not a JSON event with time and request_id).",
    registry=REGISTRY,
)
INSIGHTS_UNREAD_BYTES: Final = Gauge(
    "scarfgw_insights_unread_bytes",
    "Bytes of the followed JSONL files the insights ingest has not read yet (after its last "
    "step): how far it lags behind, e.g. while busy cores hold back its low-priority thread.",
    registry=REGISTRY, multiprocess_mode="livesum",
)
INSIGHTS_INGEST_ERRORS: Final = Counter(
    "scarfgw_insights_ingest_errors", "Insights ingest steps that failed (retried).",
    registry=REGISTRY,
)


FLUSH_INTERVAL_SECONDS: Final = 1.0
"""How often a process with workers writes its pending updates (see :func:`flush`)."""

_DURATION_BOUNDS: Final = (*map(float, _DURATION_BUCKETS), float("inf"))


class _Pending:
    """Updates not yet added to the metrics (see the module docstring), and the source of
    the queue depth. One Final instance: compiled, its fields are plain C fields, where
    reassigned module globals would be dict lookups on every request."""

    def __init__(self) -> None:
        self.requests: dict[Any, int] = {}
        self.connections: dict[Any, int] = {}
        self.durations = [0] * len(_DURATION_BOUNDS)
        self.duration_sum = 0.0
        self.in_flight = 0
        self.response_bytes = 0
        self.events_queued = 0
        self.depth_source: Callable[[], float] | None = None


_PENDING: Final = _Pending()


def watch_queue_depth(depth: Callable[[], float]) -> None:
    """Make ``scarfgw_events_queue_depth`` report ``depth()`` (the latest caller wins): read
    at scrape time in a single process, written by :func:`flush` with several."""
    _PENDING.depth_source = depth
    if not MULTIPROCESS:
        EVENTS_QUEUE_DEPTH.set_function(depth)


def request_started() -> None:
    """Count a request in ``scarfgw_http_requests_in_flight`` until :func:`request_finished`."""
    _PENDING.in_flight += 1


def request_finished(status: int, method: bytes, kind: str, duration: float,
                     sent_bytes: int) -> None:
    """Account one answered request (after :func:`request_started`): in flight, requests
    total by code/method/kind, duration histogram, response bytes."""
    pending = _PENDING
    pending.in_flight -= 1
    key = (status, method, kind)
    child = _REQUEST_CHILDREN.get(key) or _request_child(key)
    requests = pending.requests
    requests[child] = requests.get(child, 0) + 1
    pending.durations[bisect_left(_DURATION_BOUNDS, duration)] += 1
    pending.duration_sum += duration
    if sent_bytes:
        pending.response_bytes += sent_bytes


def connection_opened(gauge: Any) -> None:
    """Count a connection in ``gauge`` (a ``scarfgw_open_connections`` child) until
    :func:`connection_closed`."""
    connections = _PENDING.connections
    connections[gauge] = connections.get(gauge, 0) + 1


def connection_closed(gauge: Any) -> None:
    """Uncount a connection :func:`connection_opened` counted in ``gauge``."""
    connections = _PENDING.connections
    connections[gauge] = connections.get(gauge, 0) - 1


def event_queued() -> None:
    """Add one to ``scarfgw_events_queued_total``."""
    _PENDING.events_queued += 1


def flush() -> None:
    """Add the pending updates to the metrics.

    A single process does this before every read of the registry. With workers each process
    must call it every :data:`FLUSH_INTERVAL_SECONDS` and before it exits (the service
    does), because another process reads the values from their files.
    """
    pending = _PENDING
    if pending.requests:
        for child, count in pending.requests.items():
            child.inc(count)
        pending.requests.clear()
    durations = pending.durations
    if any(durations):
        # Histogram.observe() for many observations at once: its bucket and sum values.
        buckets = HTTP_REQUEST_DURATION._buckets
        for index, count in enumerate(durations):
            if count:
                buckets[index].inc(count)
                durations[index] = 0
        HTTP_REQUEST_DURATION._sum.inc(pending.duration_sum)
        pending.duration_sum = 0.0
    if pending.connections:
        for gauge, change in pending.connections.items():
            if change:
                gauge.inc(change)
        pending.connections.clear()
    if pending.in_flight:
        HTTP_IN_FLIGHT.inc(pending.in_flight)
        pending.in_flight = 0
    if pending.response_bytes:
        HTTP_RESPONSE_BYTES.inc(pending.response_bytes)
        pending.response_bytes = 0
    if pending.events_queued:
        EVENTS_QUEUED.inc(pending.events_queued)
        pending.events_queued = 0
    if MULTIPROCESS and pending.depth_source is not None:
        EVENTS_QUEUE_DEPTH.set(pending.depth_source())


class CertificateExpiry(Collector):
    """``scarfgw_tls_certificate_not_after_timestamp_seconds{domain}``, read at scrape time
    from the certificate managers that registered a source (so a domain leaves the series
    as soon as it leaves the config, also with several workers)."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Mapping[str, float]]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample per served domain (the latest expiry when several sources know it)."""
        family = GaugeMetricFamily(
            "scarfgw_tls_certificate_not_after_timestamp_seconds",
            "Expiry of the certificate served for a configured domain.", labels=["domain"],
        )
        latest: dict[str, float] = {}
        for source in self.sources:
            for domain, not_after in source().items():
                latest[domain] = max(not_after, latest.get(domain, not_after))
        for domain, not_after in sorted(latest.items()):
            family.add_metric([domain], not_after)
        yield family


TLS_CERT_NOT_AFTER: Final = CertificateExpiry()
REGISTRY.register(TLS_CERT_NOT_AFTER)
ACME_ORDERS: Final = Counter(
    "scarfgw_acme_orders", "ACME orders, by result.", ["result"], registry=REGISTRY,
)
DOMAIN_VERIFICATIONS: Final = Counter(
    "scarfgw_domain_verifications", "Domain ownership checks, by result.", ["result"],
    registry=REGISTRY,
)
