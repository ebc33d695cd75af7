"""HttpSink against a real twisted.web server on 127.0.0.1: exact NDJSON, gzip, failures."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from scarfgw.analytics.sinks import HttpSink, SinkError

pytestmark = pytest.mark.integration

reactor: Any = global_reactor

LINES = [b'{"n":1,"ua":"\xc3\xa9"}', b'{"n":2}']


class Collector(Resource):
    """Records each POST; answers ``status`` (or never, when ``status`` is None)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.status: int | None = 200
        self.url = ""
        self.received: list[tuple[bytes, dict[bytes, list[bytes]], bytes]] = []

    def render_POST(self, request):
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.received.append((request.uri, headers, request.content.read()))
        if self.status is None:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return b"Code: 27. DB::Exception: bad row" if self.status >= 400 else b"Ok.\n"


@pytest.fixture
def collector():
    resource = Collector()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    query = "INSERT%20INTO%20e%20FORMAT%20JSONEachRow"
    resource.url = f"http://127.0.0.1:{port.getHost().port}/?query={query}"
    yield resource
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.inlineCallbacks
def test_posts_exact_ndjson_with_headers(collector):
    sink = HttpSink(collector.url, reactor=reactor, headers={"X-ClickHouse-User": "scarf"})
    try:
        yield sink.write(LINES)
        yield sink.write([b'{"n":3}'])
    finally:
        yield sink.close()
    (uri, headers, body), (_, _, second) = collector.received
    assert uri == b"/?query=INSERT%20INTO%20e%20FORMAT%20JSONEachRow"
    assert body == b'{"n":1,"ua":"\xc3\xa9"}\n{"n":2}\n'
    assert second == b'{"n":3}\n'
    assert headers[b"Content-Type"] == [b"application/x-ndjson"]
    assert headers[b"X-Clickhouse-User"] == [b"scarf"]
    assert b"Content-Encoding" not in headers


@pytest_twisted.inlineCallbacks
def test_gzip_body(collector):
    sink = HttpSink(collector.url, reactor=reactor, gzip=True)
    try:
        yield sink.write(LINES)
    finally:
        yield sink.close()
    [(_, headers, body)] = collector.received
    assert headers[b"Content-Encoding"] == [b"gzip"]
    assert gzip.decompress(body) == b'{"n":1,"ua":"\xc3\xa9"}\n{"n":2}\n'


@pytest_twisted.inlineCallbacks
def test_server_error_is_a_failure(collector):
    collector.status = 500
    sink = HttpSink(collector.url, reactor=reactor)
    try:
        with pytest.raises(SinkError, match=r"HTTP 500 .* DB::Exception"):
            yield sink.write(LINES)
        collector.status = 204
        yield sink.write(LINES)
    finally:
        yield sink.close()
    assert len(collector.received) == 2


@pytest_twisted.inlineCallbacks
def test_no_answer_times_out(collector):
    collector.status = None
    sink = HttpSink(collector.url, reactor=reactor, timeout=0.3)
    try:
        with pytest.raises(SinkError, match=r"no answer .* within 0\.3 s"):
            yield sink.write(LINES)
    finally:
        yield sink.close()


@pytest_twisted.inlineCallbacks
def test_connection_refused_is_a_failure():
    sink = HttpSink("http://127.0.0.1:1/", reactor=reactor, timeout=5)
    with pytest.raises(Exception, match=r"refused|Connection"):
        yield sink.write(LINES)
    yield sink.close()
