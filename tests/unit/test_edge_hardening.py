"""Unit tests of issue 11's limits (the integration tests are in
tests/integration/test_hostile_clients.py): output backpressure, empty lines, connection
limit, config keys, backlog, JSON depth, dot-segments, the JSONL sink's reopening, the
``complete`` event key and the failure log."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from scarfgw.analytics.event import build_event
from scarfgw.analytics.sinks import JsonlSink
from scarfgw.config import ConfigError, load_config
from scarfgw.http.channel import GatewayRequest
from scarfgw.http.endpoints import with_backlog
from scarfgw.ops import metrics
from scarfgw.ops.logging import FailureLog
from scarfgw.rules.bodyjson import MAX_DEPTH, TooDeep, check_depth, parse_single_json
from scarfgw.rules.decision import Respond
from scarfgw.rules.files import leaves_prefix
from scarfgw.rules.manifest import parse_rules
from scarfgw.rules.request import Headers, RequestView, has_dot_segment
from scarfgw.rules.router import Router
from tests.unit.test_channel import connect, responses
from tests.unit.test_writer import InlineReactor

PIPELINED = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"


def test_nothing_is_answered_or_read_while_the_output_is_blocked() -> None:
    channel, transport, _ = connect()
    channel.pauseProducing()  # what the transport does once its buffer is over its size
    channel.dataReceived(PIPELINED)
    assert responses(transport) == []
    assert transport.producerState == "paused"
    channel.resumeProducing()  # the buffer drained
    assert len(responses(transport)) == 2
    assert transport.producerState == "producing"


@implementer(IPushProducer)
class Body:
    """A streamed body's producer: records what it was told."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


def test_a_streamed_body_is_paused_and_resumed_with_the_output() -> None:
    pending: list[GatewayRequest] = []
    channel, _, _ = connect(pending.append)
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    body = Body()
    channel.pauseProducing()
    pending[0].registerProducer(body, True)
    channel.resumeProducing()
    channel.pauseProducing()
    pending[0].unregisterProducer()
    channel.resumeProducing()
    assert body.calls == ["pause", "resume", "pause"]


def test_empty_lines_are_not_activity() -> None:
    channel, transport, clock = connect(timeout=30)
    for _ in range(8):
        clock.advance(5)
        channel.dataReceived(b"\r\n")
        channel.factory.close_stale()
    assert transport.disconnected
    fresh, fresh_transport, fresh_clock = connect(timeout=30)
    fresh_clock.advance(25)
    fresh.dataReceived(b"GET")  # a request begun is activity
    fresh_clock.advance(10)
    fresh.factory.close_stale()
    assert not fresh_transport.disconnected


def test_connections_past_the_limit_are_not_built() -> None:
    channel, _, _ = connect()
    factory = channel.factory
    factory.max_connections = 1
    rejected = metrics.REGISTRY.get_sample_value("scarfgw_connections_rejected_total",
                                                 {"listener": "http"}) or 0.0
    assert factory.buildProtocol(None) is None
    assert metrics.REGISTRY.get_sample_value("scarfgw_connections_rejected_total",
                                             {"listener": "http"}) == rejected + 1


def test_limits_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    limits = load_config(str(path)).limits
    assert (limits.max_connections, limits.client_timeout, limits.listen_backlog) == (
        10_000, 60.0, 1024)
    path.write_text("limits: {max_connections: 5, client_timeout: 2.5, listen_backlog: 4096}")
    limits = load_config(str(path)).limits
    assert (limits.max_connections, limits.client_timeout, limits.listen_backlog) == (
        5, 2.5, 4096)
    path.write_text("limits: {max_connections: 0}")
    with pytest.raises(ConfigError, match=r"limits\.max_connections: expected a positive"):
        load_config(str(path))


@pytest.mark.parametrize(("spec", "expected"), [
    ("tcp:8080", "tcp:8080:backlog=1024"),
    ("tcp6:port=443:interface=\\:\\:1", "tcp6:port=443:interface=\\:\\:1:backlog=1024"),
    ("tcp:80:backlog=50", "tcp:80:backlog=50"),
    ("unix:/run/scarfgw.sock", "unix:/run/scarfgw.sock"),
])
def test_with_backlog(spec: str, expected: str) -> None:
    assert with_backlog(spec, 1024) == expected


def test_json_depth_is_checked_outside_strings() -> None:
    check_depth("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    check_depth('["' + "[" * 500 + '"]')
    check_depth('"\\"' + "[" * 100)  # an escaped quote does not end the string
    with pytest.raises(TooDeep, match="nested deeper than 64 levels"):
        check_depth("[" * (MAX_DEPTH + 1))
    with pytest.raises(TooDeep):
        parse_single_json(b'{"a":' * 2000)


def view(host: str, path: str, method: str = "GET", body: bytes = b"") -> RequestView:
    return RequestView(method, host, path, None, Headers(), body)


def test_rules_answer_deep_json_with_400_and_a_reason() -> None:
    router = Router(parse_rules([
        {"type": "telemetry-v1", "domain": "t.test", "incoming-path": "/e", "package-id": "t",
         "max-body-bytes": 8192},
        {"type": "scarf-js-v1", "domain": "t.test"},
        {"type": "file-v1", "domain": "f.test", "incoming-path": "/{x}", "package-id": "f",
         "outgoing-url": "https://files.test/{x}"},
    ], "rules", lambda _: None))
    deep = b"[" * 3000
    for path in ("/e", "/package-event/install"):
        decision = router.route(view("t.test", path, "POST", deep))
        assert isinstance(decision, Respond)
        assert (decision.status, decision.body) == (400, b"JSON nested deeper than 64 levels\n")
        assert decision.captures == ()
    download = router.route(view("f.test", "/a.tgz", "POST", deep))
    assert download.captures[0]["target"] == "https://files.test/a.tgz"


@pytest.mark.parametrize(("path", "dotted"), [
    ("/a/../b", True), ("/a/./b", True), ("/a/%2e%2E/b", True), ("/a/..%2fb", True),
    ("/a/..\\b", True), ("/..", True), ("/a..b/.c/c./", False), ("/a/b", False),
    ("/a/%2e%2e%2e/b", False),
])
def test_has_dot_segment(path: str, dotted: bool) -> None:
    assert has_dot_segment(path) is dotted


def test_file_targets_with_dot_segments_leave_the_prefix() -> None:
    assert leaves_prefix("https://files.test/1.0/../../x.tgz?a=../b")
    assert not leaves_prefix("https://files.test/1.0/x.tgz?a=../b")


def test_docker_paths_with_dot_segments_get_400_without_event() -> None:
    router = Router(parse_rules([
        {"type": "docker-v1", "domain": "cr.test", "repository-name": "library/hello",
         "registry": "r.test", "package-id": "p"}], "rules", lambda _: None))
    decision = router.route(view("cr.test", "/v2/library/hello/manifests/%2e%2e/x/manifests/1"))
    assert isinstance(decision, Respond)
    assert decision.status == 400 and b"NAME_INVALID" in decision.body
    assert decision.captures == ()


def test_jsonl_sink_writes_into_a_recreated_file(tmp_path: Path) -> None:
    path = tmp_path / "d" / "events.jsonl"
    sink = JsonlSink(path, reactor=InlineReactor())
    sink.write([b'{"n":1}'])
    shutil.rmtree(tmp_path / "d")
    sink.write([b'{"n":2}'])
    assert path.read_bytes() == b'{"n":2}\n'
    replacement = tmp_path / "other.jsonl"
    replacement.write_bytes(b"")
    os.replace(replacement, path)
    sink.write([b'{"n":3}'])
    assert path.read_bytes() == b'{"n":3}\n'


def test_the_jsonl_sink_creates_its_file_0640_like_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    old_mask = os.umask(0o022)
    try:
        JsonlSink(path, reactor=InlineReactor()).write([b'{"n":1}'])
    finally:
        os.umask(old_mask)
    assert path.stat().st_mode & 0o777 == 0o640


def event(complete: bool) -> dict[str, Any]:
    return build_event({"kind": "docker"}, time=0.0, request_id="r", domain="d", method="GET",
                       path="/", status=200, user_agent=None, referer=None, client_ip=None,
                       complete=complete)


def test_complete_key_only_when_the_body_was_cut() -> None:
    assert "complete" not in event(True)
    assert event(False)["complete"] is False
    assert json.dumps(event(False)).count('"complete": false') == 1


def test_a_failure_kind_is_logged_with_a_traceback_once() -> None:
    logged: list[dict[str, Any]] = []
    failures = FailureLog(Logger(observer=logged.append))  # type: ignore[arg-type]

    def fail() -> Failure:
        try:
            raise ValueError("boom")
        except ValueError:
            return Failure()

    for request_id in ("r1", "r2", "r3"):
        failures.record(fail(), request_id, "answering {uri} failed", uri="/x")
    assert ["log_failure" in entry for entry in logged] == [True, False, False]
    assert [entry["log_level"] for entry in logged] == [LogLevel.error, LogLevel.warn,
                                                        LogLevel.warn]
    assert [entry["request_id"] for entry in logged] == ["r1", "r2", "r3"]
