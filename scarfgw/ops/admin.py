"""The admin listener: ``/metrics`` (Prometheus text format), ``/livez``, ``/readyz``."""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from twisted.web.resource import Resource
from twisted.web.server import Request

from scarfgw.ops.metrics import REGISTRY, TLS_CERT_NOT_AFTER
from scarfgw.ops.sharedmetrics import METRICS_DIR_VARIABLE


class _Text(Resource):
    isLeaf = True

    def __init__(self, answer: Callable[[], tuple[int, bytes]]) -> None:
        super().__init__()
        self.answer = answer

    def render_GET(self, request: Request) -> bytes:
        status, body = self.answer()
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return body

    render_HEAD = render_GET


def exposed_registry() -> CollectorRegistry:
    """This process's metrics, or with several workers the sum over every process."""
    directory = os.environ.get(METRICS_DIR_VARIABLE)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    registry.register(TLS_CERT_NOT_AFTER)
    return registry


class _Metrics(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.registry = exposed_registry()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


def admin_resource(is_ready: Callable[[], bool]) -> Resource:
    """The admin tree; ``is_ready`` says whether the gateway should receive traffic."""
    root = Resource()
    root.putChild(b"metrics", _Metrics())
    root.putChild(b"livez", _Text(lambda: (200, b"ok\n")))
    root.putChild(
        b"readyz",
        _Text(lambda: (200, b"ready\n") if is_ready() else (503, b"not ready\n")),
    )
    return root
