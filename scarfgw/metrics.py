"""Every Prometheus metric of scarfgw, defined once (names follow Prometheus conventions).

With several workers the values of every process are summed (gauges: live sum, or the
maximum for timestamps) through prometheus-client's multiprocess mode. No label takes
unbounded values: ``kind`` is a rule kind, ``code`` an HTTP status,
``method`` one of a fixed set, ``domain`` only configured TLS domains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The ``method`` label value: known methods as they are, anything else ``OTHER``."""
    return method if method in KNOWN_METHODS else "OTHER"


HTTP_REQUESTS = Counter(
    "scarfgw_http_requests", "Requests answered, by status code, method and rule kind.",
    ["code", "method", "kind"], registry=REGISTRY,
)
_REQUEST_CHILDREN: dict[tuple[int, bytes, str], Any] = {}
_REQUEST_CHILDREN_LIMIT = 1024


def count_request(status: int, method: bytes, kind: str) -> None:
    """Add one to ``scarfgw_http_requests_total`` (label children cached per status, method
    and kind: ``labels()`` costs several microseconds)."""
    key = (status, method, kind)
    child = _REQUEST_CHILDREN.get(key)
    if child is None:
        child = HTTP_REQUESTS.labels(str(status), method_label(method.decode("ascii", "replace")),
                                     kind)
        if len(_REQUEST_CHILDREN) < _REQUEST_CHILDREN_LIMIT:
            _REQUEST_CHILDREN[key] = child
    child.inc()


HTTP_REQUEST_DURATION = Histogram(
    "scarfgw_http_request_duration_seconds",
    "Time from request received to response finished.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
             60, 300),
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "scarfgw_http_requests_in_flight", "Requests being answered.", registry=REGISTRY,
    multiprocess_mode="livesum",
)
OPEN_CONNECTIONS = Gauge(
    "scarfgw_open_connections", "Open client connections per listener.", ["listener"],
    registry=REGISTRY, multiprocess_mode="livesum",
)
HTTP_RESPONSE_BYTES = Counter(
    "scarfgw_http_response_bytes", "Response body bytes sent to clients.", registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "scarfgw_upstream_request_duration_seconds",
    "Time until an upstream answered with response headers.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "scarfgw_upstream_errors", "Upstream requests that failed, by reason.", ["reason"],
    registry=REGISTRY,
)
EVENTS_QUEUED = Counter(
    "scarfgw_events_queued", "Analytics events accepted by the writer.", registry=REGISTRY,
)
EVENTS_WRITTEN = Counter(
    "scarfgw_events_written", "Analytics events a sink confirmed.", ["sink"], registry=REGISTRY,
)
EVENTS_SPOOLED = Counter(
    "scarfgw_events_spooled", "Analytics events written to the disk spool.", registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "scarfgw_events_dropped", "Analytics events lost, by reason.", ["reason"], registry=REGISTRY,
)
EVENTS_QUEUE_DEPTH = Gauge(
    "scarfgw_events_queue_depth", "Analytics events held in memory.", registry=REGISTRY,
    multiprocess_mode="livesum",
)
CONFIG_RELOADS = Counter(
    "scarfgw_config_reloads", "Configuration reloads, by result.", ["result"], registry=REGISTRY,
)
CONFIG_LAST_RELOAD_SUCCESS = Gauge(
    "scarfgw_config_last_reload_success_timestamp_seconds",
    "Unix time of the last successful configuration load.", registry=REGISTRY,
    multiprocess_mode="max",
)
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


TLS_CERT_NOT_AFTER = CertificateExpiry()
REGISTRY.register(TLS_CERT_NOT_AFTER)
ACME_ORDERS = Counter(
    "scarfgw_acme_orders", "ACME orders, by result.", ["result"], registry=REGISTRY,
)
DOMAIN_VERIFICATIONS = Counter(
    "scarfgw_domain_verifications", "Domain ownership checks, by result.", ["result"],
    registry=REGISTRY,
)
