"""Per-request and per-connection metric updates: exact whenever the registry is read, in
one process (local sums added at read time) and in multiprocess mode (after a flush)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from scarfgw.ops import metrics

REQUESTS = [
    (307, b"GET", "docker", 0.0004, 0),
    (307, b"HEAD", "docker", 0.0005, 0),  # a bucket bound is inclusive (le)
    (200, b"GET", "file", 0.3, 1000),
    (404, b"BREW", "none", 0.00051, 0),
    (502, b"GET", "docker", 400.0, 120),  # beyond the last finite bucket
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples() -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _delta(before: Samples, after: Samples) -> Samples:
    return {key: value - before.get(key, 0.0) for key, value in after.items()
            if value != before.get(key, 0.0)}


def _old_calls() -> None:
    for status, method, kind, duration, sent in REQUESTS:
        metrics.HTTP_IN_FLIGHT.inc()
        metrics.HTTP_IN_FLIGHT.dec()
        metrics.count_request(status, method, kind)
        metrics.HTTP_REQUEST_DURATION.observe(duration)
        if sent:
            metrics.HTTP_RESPONSE_BYTES.inc(sent)
        metrics.EVENTS_QUEUED.inc()


def _new_calls() -> None:
    for status, method, kind, duration, sent in REQUESTS:
        metrics.request_started()
        metrics.request_finished(status, method, kind, duration, sent)
        metrics.event_queued()


def test_request_finished_shows_what_the_separate_updates_showed() -> None:
    start = _samples()
    _old_calls()
    middle = _samples()
    _new_calls()
    end = _samples()
    old, new = _delta(start, middle), _delta(middle, end)
    duration_sum: tuple[str, frozenset[tuple[str, str]]] = (
        "scarfgw_http_request_duration_seconds_sum", frozenset())
    assert new.pop(duration_sum) == pytest.approx(old.pop(duration_sum))
    assert new == old
    assert old[("scarfgw_http_requests_total",
                frozenset({("code", "404"), ("method", "OTHER"), ("kind", "none")}))] == 1
    assert old[("scarfgw_http_request_duration_seconds_bucket",
                frozenset({("le", "0.0005")}))] == 2


def test_pending_updates_are_visible_to_every_read() -> None:
    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    count = value("scarfgw_http_requests_total", code="307", method="GET", kind="docker")
    sent = value("scarfgw_http_response_bytes_total")
    queued = value("scarfgw_events_queued_total")
    in_flight = value("scarfgw_http_requests_in_flight")
    metrics.request_started()
    metrics.request_started()
    assert value("scarfgw_http_requests_in_flight") == in_flight + 2
    metrics.request_finished(307, b"GET", "docker", 0.001, 10)
    metrics.event_queued()
    text = generate_latest(metrics.REGISTRY).decode()
    assert f"scarfgw_http_requests_in_flight {in_flight + 1}" in text
    assert value("scarfgw_http_requests_total", code="307", method="GET", kind="docker") == (
        count + 1)
    assert value("scarfgw_http_response_bytes_total") == sent + 10
    assert value("scarfgw_events_queued_total") == queued + 1
    metrics.request_finished(307, b"GET", "docker", 0.001, 0)
    assert value("scarfgw_http_requests_in_flight") == in_flight


def test_open_connections_are_counted_at_every_read() -> None:
    def value(listener: str) -> float:
        return metrics.REGISTRY.get_sample_value(
            "scarfgw_open_connections", {"listener": listener}) or 0.0

    http, https = (metrics.OPEN_CONNECTIONS.labels(name) for name in ("http", "https"))
    before_http, before_https = value("http"), value("https")
    metrics.connection_opened(http)
    metrics.connection_opened(http)
    metrics.connection_opened(https)
    assert value("http") == before_http + 2
    assert value("https") == before_https + 1
    metrics.connection_closed(http)
    metrics.connection_closed(https)
    text = generate_latest(metrics.REGISTRY).decode()
    assert f'scarfgw_open_connections{{listener="http"}} {before_http + 1}' in text
    assert value("https") == before_https
    metrics.connection_closed(http)
    assert value("http") == before_http


def test_a_label_child_is_created_by_the_first_request_not_by_the_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1000.0)
    metrics.request_started()
    metrics.request_finished(299, b"GET", "created-test", 0.001, 0)
    monkeypatch.setattr(time, "time", lambda: 2000.0)
    labels = {"code": "299", "method": "GET", "kind": "created-test"}
    assert metrics.REGISTRY.get_sample_value("scarfgw_http_requests_created", labels) == 1000.0
    assert metrics.REGISTRY.get_sample_value("scarfgw_http_requests_total", labels) == 1.0


def test_queue_depth_is_read_at_scrape_time() -> None:
    depth = [3]
    metrics.watch_queue_depth(lambda: depth[0])
    assert metrics.REGISTRY.get_sample_value("scarfgw_events_queue_depth") == 3
    depth[0] = 0
    assert metrics.REGISTRY.get_sample_value("scarfgw_events_queue_depth") == 0


def test_multiprocess_mode_writes_the_files_on_flush(tmp_path: Path) -> None:
    worker = textwrap.dedent("""
        import sys
        from scarfgw.ops import metrics
        assert metrics.MULTIPROCESS
        metrics.request_started()
        metrics.request_started()
        metrics.request_finished(307, b"GET", "docker", 0.0004, 0)
        metrics.request_finished(200, b"GET", "file", 0.3, 1000)
        metrics.event_queued()
        https = metrics.OPEN_CONNECTIONS.labels("https")
        for _ in range(3):
            metrics.connection_opened(https)
        metrics.connection_closed(https)
        metrics.watch_queue_depth(lambda: 4)
        sys.stdout.write("updated\\n")
        sys.stdout.flush()
        sys.stdin.readline()
        metrics.flush()
        sys.stdout.write("flushed\\n")
        sys.stdout.flush()
        sys.stdin.read()
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, "-c", worker], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline() == "updated\n"
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        def value(name: str, **labels: str) -> float | None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(tmp_path))
            return registry.get_sample_value(name, labels)

        assert not value("scarfgw_http_request_duration_seconds_count")
        assert not value("scarfgw_open_connections", listener="https")
        process.stdin.write("flush\n")
        process.stdin.flush()
        assert process.stdout.readline() == "flushed\n"

        assert value("scarfgw_http_requests_total", code="307", method="GET",
                     kind="docker") == 1
        assert value("scarfgw_http_requests_total", code="200", method="GET", kind="file") == 1
        assert value("scarfgw_http_request_duration_seconds_count") == 2
        assert value("scarfgw_http_request_duration_seconds_bucket", le="0.0005") == 1
        assert value("scarfgw_http_request_duration_seconds_sum") == pytest.approx(0.3004)
        assert value("scarfgw_http_requests_in_flight") == 0
        assert value("scarfgw_http_response_bytes_total") == 1000
        assert value("scarfgw_events_queued_total") == 1
        assert value("scarfgw_events_queue_depth") == 4
        assert value("scarfgw_open_connections", listener="https") == 2
    finally:
        process.communicate("", timeout=10)
