"""Behaviour at the edge, through real sockets: privacy, trusted proxies, malformed requests,
events and metrics of the in-process gateway."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import threads

from scarfgw.rules.docker import token_path
from tests.support import gateway_config, get, raw_request, start_fake_upstream, start_gateway

DOCKER_RULE = {"type": "docker-v1", "domain": "cr.example.test",
               "repository-name": "library/hello", "registry": "registry.example.test",
               "package-id": "p1"}
TELEMETRY_RULE = {"type": "telemetry-v1", "domain": "t.example.test", "incoming-path": "/events",
                  "package-id": "t1"}
DOCKER = {"Host": "cr.example.test", "User_Agent": "docker/27.0"}
MANIFEST = "/v2/library/hello/manifests/latest"


@pytest_twisted.inlineCallbacks
def test_event_record_has_common_keys_and_no_raw_ip(tmp_path: Path) -> Any:
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=[DOCKER_RULE]))
    response = yield get(gateway.port, MANIFEST, Referer="https://example.test/", **DOCKER)
    yield gateway.stop()
    assert response.status == 307
    [event] = gateway.events()
    assert event["origin"] == {"network": "127.0.0.0/24"}
    assert "127.0.0.1" not in str(event)
    assert event["time"].endswith("Z") and event["request_id"]
    assert (event["domain"], event["method"], event["path"], event["status"]) == (
        "cr.example.test", "GET", MANIFEST, 307)
    assert (event["user_agent"], event["referer"]) == ("docker/27.0", "https://example.test/")
    assert (event["kind"], event["image"], event["pull"], event["object"]) == (
        "docker", "library/hello", True, "manifest")


@pytest_twisted.inlineCallbacks
def test_dnt_and_gpc_are_served_but_not_recorded(tmp_path: Path) -> Any:
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=[DOCKER_RULE]))
    first = yield get(gateway.port, MANIFEST, DNT="1", **DOCKER)
    second = yield get(gateway.port, MANIFEST, Sec_GPC="1", **DOCKER)
    third = yield get(gateway.port, MANIFEST, DNT="0", **DOCKER)
    yield gateway.stop()
    assert [first.status, second.status, third.status] == [307, 307, 307]
    assert len(gateway.events()) == 1


@pytest_twisted.inlineCallbacks
def test_forwarded_headers_only_from_trusted_proxies(tmp_path: Path) -> Any:
    rules = [DOCKER_RULE]
    trusting = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=rules))
    via_proxy = {"Host": "proxy.internal", "X_Forwarded_Host": "cr.example.test",
                 "X_Forwarded_For": "203.0.113.9, 127.0.0.5", "User_Agent": "docker/27.0"}
    trusted = yield get(trusting.port, MANIFEST, **via_proxy)
    yield trusting.stop()
    assert trusted.status == 307
    assert trusting.events()[0]["origin"] == {"network": "203.0.113.0/24"}

    other = tmp_path / "untrusting"
    other.mkdir()
    untrusting = yield start_gateway(other, gateway_config(other, rules=rules,
                                                           trusted_proxies=[]))
    ignored = yield get(untrusting.port, MANIFEST, **via_proxy)
    direct = yield get(untrusting.port, MANIFEST, **DOCKER)
    yield untrusting.stop()
    assert ignored.status == 404
    assert direct.status == 307
    assert untrusting.events()[0]["origin"] == {"network": "127.0.0.0/24"}


@pytest_twisted.inlineCallbacks
def test_malformed_requests_get_clear_answers(tmp_path: Path) -> Any:
    config = gateway_config(tmp_path, rules=[DOCKER_RULE, TELEMETRY_RULE],
                            limits={"max_body_bytes": 1024})
    gateway = yield start_gateway(tmp_path, config)
    port = gateway.port
    bad_escape = yield get(port, "/v2/library/%zz/manifests/%e9", **DOCKER)
    assert bad_escape.status == 404
    assert b"NAME_UNKNOWN" in bad_escape.body
    non_ascii = yield raw_request(port, "GET", "/v2/caf\u00e9", [("Host", "cr.example.test")])
    assert non_ascii.status == 400
    bad_host = yield raw_request(port, "GET", "/", [("Host", "caf\u00e9.test")])
    assert bad_host.status == 400
    huge_line = yield raw_request(port, "GET", "/", [("Host", "cr.example.test"),
                                                     ("X-Big", "a" * 20000)])
    assert huge_line.status == 431
    many = [("Host", "cr.example.test")] + [(f"X-{i}", "a") for i in range(100)]
    too_many = yield raw_request(port, "GET", "/", many)
    assert too_many.status == 431
    big_head = [("Host", "cr.example.test")] + [(f"X-{i}", "a" * 15000) for i in range(5)]
    too_big_head = yield raw_request(port, "GET", "/", big_head)
    assert too_big_head.status == 431
    long_target = yield raw_request(port, "GET", "/" + "a" * 17000, [("Host", "cr.example.test")])
    assert long_target.status == 414
    two_hosts = yield raw_request(port, "GET", MANIFEST, [("Host", "cr.example.test"),
                                                          ("Host", "other.test")])
    assert two_hosts.status == 400
    absolute = yield raw_request(port, "GET", "http://cr.example.test" + MANIFEST,
                                 [("Host", "other.test"), ("User-Agent", "docker/27.0")])
    assert absolute.status == 307  # RFC 9112 3.2.2: the target's authority, not Host
    big_body = b'{"a": 1}' + b" " * 4096
    too_big = yield raw_request(port, "POST", "/events", [("Host", "t.example.test")], big_body)
    assert too_big.status == 413
    accepted = yield raw_request(port, "POST", "/events", [("Host", "t.example.test")],
                                 b'{"a": 1}{"b": 2}')
    assert accepted.status == 200
    still_serving = yield get(port, MANIFEST, **DOCKER)
    assert still_serving.status == 307
    yield gateway.stop()
    assert [e.get("event") for e in gateway.events() if e["kind"] == "telemetry"] == [
        {"a": 1}, {"b": 2}]


@pytest_twisted.inlineCallbacks
def test_tls_client_hello_on_plain_http_is_closed_at_once(tmp_path: Path) -> Any:
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=[DOCKER_RULE]))
    hello = bytes([0x16, 0x03, 0x01, 0x00, 0x05]) + b"\x01\x00\x00\x01\x00"
    from twisted.internet import defer, protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    closed: defer.Deferred[bytes] = defer.Deferred()

    class Probe(protocol.Protocol):
        def connectionMade(self) -> None:
            assert self.transport is not None
            self.transport.write(hello)

        def connectionLost(self, reason: Any = None) -> None:
            closed.callback(b"")

    yield TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.port).connect(
        protocol.Factory.forProtocol(Probe))
    timeout = reactor.callLater(2, closed.cancel)
    yield closed
    timeout.cancel()
    yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_geoip_enrichment_and_access_log(tmp_path: Path, geoip_databases: list[Path]) -> Any:
    from twisted.logger import ILogObserver, globalLogPublisher
    from zope.interface import provider

    access: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "scarfgw.access":
            access.append(event)

    config = gateway_config(tmp_path, rules=[DOCKER_RULE],
                            access_log={"enabled": True, "sample": 1.0})
    config["events"]["geoip"] = {"databases": [str(p) for p in geoip_databases]}
    globalLogPublisher.addObserver(observe)
    try:
        gateway = yield start_gateway(tmp_path, config)
        response = yield get(gateway.port, MANIFEST, X_Forwarded_For="203.0.113.77", **DOCKER)
        yield gateway.stop()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert response.status == 307
    [event] = gateway.events()
    assert event["origin"] == {"network": "203.0.113.0/24", "country": "DE",
                               "org": "Example Networks", "type": None}
    assert "203.0.113.77" not in str(event)
    [line] = access
    assert (line["status"], line["host"], line["path"]) == (307, "cr.example.test", MANIFEST)
    assert "203.0.113.77" not in str(line)


@pytest_twisted.inlineCallbacks
def test_rewritten_token_realm_names_the_origin_the_client_used(tmp_path: Path) -> Any:
    challenge = 'Bearer realm="https://auth.backend.test/token",service="registry"'
    fake = yield start_fake_upstream(401, {"WWW-Authenticate": challenge})
    rule = {**DOCKER_RULE, "token-realm": "rewrite"}
    config = gateway_config(tmp_path, rules=[rule],
                            proxy={"upstreams": {"registry.example.test": fake.url}})
    gateway = yield start_gateway(tmp_path, config)
    skopeo = {"User_Agent": "skopeo/1.9.3"}
    behind_tls = yield get(gateway.port, MANIFEST, Host="internal:8080",
                           X_Forwarded_Host="cr.example.test:8443", X_Forwarded_Proto="https",
                           **skopeo)
    direct = yield get(gateway.port, MANIFEST, Host="cr.example.test", **skopeo)
    yield gateway.stop()
    yield fake.port.stopListening()
    assert behind_tls.status == direct.status == 401
    own = token_path("registry.example.test")
    assert behind_tls.header("www-authenticate") == (
        f'Bearer realm="https://cr.example.test:8443{own}",service="registry"')
    assert direct.header("www-authenticate") == (
        f'Bearer realm="http://cr.example.test{own}",service="registry"')


@pytest_twisted.inlineCallbacks
def test_control_bytes_and_broken_backends_never_leave_requests_hanging(tmp_path: Path) -> Any:
    from twisted.internet import protocol, reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    class Stalling(protocol.Protocol):
        """Answers headers and the first bytes of a body, then goes silent."""

        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")

    bad_redirect = yield start_fake_upstream(307, {"Location": "/v2/a b\x01"})
    stalling = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(Stalling))
    rules = [{**DOCKER_RULE, "always-proxy": True},
             {**DOCKER_RULE, "domain": "stall.example.test", "always-proxy": True,
              "registry": "stall.example.test"}]
    upstreams = {"registry.example.test": bad_redirect.url,
                 "stall.example.test": f"http://127.0.0.1:{stalling.getHost().port}"}
    config = gateway_config(tmp_path, rules=rules,
                            proxy={"upstreams": upstreams, "response_timeout": 0.5})
    gateway = yield start_gateway(tmp_path, config)
    control = yield raw_request(gateway.port, "GET", "/v2/library/hello/manifests/\x7f",
                                [("Host", "cr.example.test")])
    assert control.status == 400
    invalid = yield get(gateway.port, MANIFEST, Host="cr.example.test")
    assert invalid.status == 502 and b"UNAVAILABLE" in invalid.body
    stalled = yield raw_request(gateway.port, "GET", MANIFEST, [("Host", "stall.example.test")])
    assert stalled.status == 200 and len(stalled.body) < 100, "the client sees a cut body"
    after = yield get(gateway.port, MANIFEST, Host="cr.example.test")
    assert after.status == 502
    assert gateway.service.gateway.in_flight == 0
    yield gateway.stop()
    yield bad_redirect.port.stopListening()
    yield stalling.stopListening()


@pytest_twisted.inlineCallbacks
def test_pipelined_keep_alive_and_http10_over_a_real_socket(tmp_path: Path) -> Any:
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=[DOCKER_RULE]))

    def converse(payload: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(payload)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    one = f"GET {MANIFEST} HTTP/1.1\r\nHost: cr.example.test\r\nUser-Agent: docker/27.0\r\n\r\n"
    unknown = b"GET /v2/other/manifests/1 HTTP/1.1\r\nHost: cr.example.test\r\n\r\n"
    last = b"GET /v2/x/manifests/1 HTTP/1.1\r\nHost: cr.example.test\r\nConnection: close\r\n\r\n"
    pipelined = yield threads.deferToThread(converse, one.encode() + unknown + one.encode() + last)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", pipelined)
    assert statuses == [b"307", b"404", b"307", b"404"]
    assert pipelined.count(b"Connection: close") == 1
    http10 = yield threads.deferToThread(
        converse, one.replace("HTTP/1.1", "HTTP/1.0").encode())
    assert http10.startswith(b"HTTP/1.1 307 ") and b"Connection: close\r\n" in http10
    yield gateway.stop()
    assert [e["status"] for e in gateway.events()] == [307, 307, 307]
