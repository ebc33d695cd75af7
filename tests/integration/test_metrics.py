"""The admin ``/metrics`` page, parsed with prometheus-client's own parser, against the
requests sent to an in-process gateway (metrics are process-global: deltas are asserted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer

from tests.support import (
    deferLater,
    docker_rule,
    free_port,
    gateway_config,
    get,
    raw_request,
    start_fake_upstream,
    start_gateway,
)

pytestmark = pytest.mark.integration

Sample = tuple[str, frozenset[tuple[str, str]]]

MANIFEST = "/v2/library/hello/manifests/latest"
BODY = b"m" * 1000


@defer.inlineCallbacks
def _scrape(admin_port: int) -> Any:
    response = yield get(admin_port, "/metrics")
    assert response.status == 200
    assert response.header("content-type").startswith("text/plain; version=")
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest_twisted.inlineCallbacks
def test_metrics_count_the_requests_sent(tmp_path: Path) -> Any:
    upstream = yield start_fake_upstream(200, {"Content-Type": "application/json"}, BODY)
    config = gateway_config(
        tmp_path,
        rules=[docker_rule("cr.example.test", "registry.example.test"),
               docker_rule("down.example.test", "down.example.test")],
        proxy={"upstreams": {"registry.example.test": upstream.url,
                             "down.example.test": f"http://127.0.0.1:{free_port()}"}},
    )
    gateway = yield start_gateway(tmp_path, config)
    try:
        before = yield _scrape(gateway.admin_port)
        docker = [("Host", "cr.example.test"), ("User-Agent", "docker/27.0")]
        proxied = [("Host", "cr.example.test"), ("User-Agent", "curl/8.5.0")]
        down = [("Host", "down.example.test"), ("User-Agent", "curl/8.5.0")]
        sent = [("GET", MANIFEST, docker)] * 3 + [("HEAD", MANIFEST, docker)]
        sent += [("GET", "/nothing/here", docker)] * 2 + [("GET", MANIFEST, proxied)] * 2
        sent += [("GET", MANIFEST, down)]
        statuses = []
        for method, target, headers in sent:
            response = yield raw_request(gateway.port, method, target, headers)
            statuses.append(response.status)
        assert statuses == [307, 307, 307, 307, 404, 404, 200, 200, 502]

        for _ in range(100):
            after = yield _scrape(gateway.admin_port)
            written = _value(after, "scarfgw_events_written_total", sink="jsonl")
            if written - _value(before, "scarfgw_events_written_total", sink="jsonl") >= 7:
                break
            yield deferLater(0.05)
    finally:
        yield gateway.stop()
        yield upstream.port.stopListening()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    requests = "scarfgw_http_requests_total"
    assert delta(requests, code="307", method="GET", kind="docker") == 3
    assert delta(requests, code="307", method="HEAD", kind="docker") == 1
    assert delta(requests, code="404", method="GET", kind="none") == 2
    assert delta(requests, code="200", method="GET", kind="docker") == 2
    assert delta(requests, code="502", method="GET", kind="docker") == 1
    assert delta("scarfgw_http_request_duration_seconds_count") == len(sent)
    assert delta("scarfgw_http_request_duration_seconds_bucket", le="+Inf") == len(sent)
    assert _value(after, "scarfgw_http_requests_in_flight") == 0
    assert delta("scarfgw_open_connections", listener="http") == 0
    assert delta("scarfgw_http_response_bytes_total") >= 2 * len(BODY)
    assert delta("scarfgw_upstream_request_duration_seconds_count") == 2
    assert delta("scarfgw_upstream_errors_total", reason="connect") == 1

    events = gateway.events()
    assert [event["status"] for event in events] == [307, 307, 307, 307, 200, 200, 502]
    assert delta("scarfgw_events_queued_total") == len(events)
    assert delta("scarfgw_events_written_total", sink="jsonl") == len(events)
    assert delta("scarfgw_events_dropped_total", reason="spool_full") == 0
    assert _value(after, "scarfgw_events_queue_depth") == 0
    assert _value(after, "scarfgw_config_last_reload_success_timestamp_seconds") > 0
