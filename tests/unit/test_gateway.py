"""The gateway on in-memory requests (:mod:`scarfgw.http.fake`): routing through the
snapshot, swaps, trusted proxies, limits, the https redirect, events and errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, cast

from twisted.internet.task import Clock

from scarfgw.config import parse_config
from scarfgw.gateway.gateway import Gateway
from scarfgw.gateway.proxy import StreamingProxy
from scarfgw.http.fake import FakeConnection
from scarfgw.runtime.snapshot import Snapshot
from scarfgw.tls.certs import self_signed
from scarfgw.tls.manager import TLSService
from scarfgw.tls.settings import TLSConfig, VerificationConfig
from scarfgw.tls.store import CertStore

RULE = {"type": "docker-v1", "domain": "cr.example.test", "repository-name": "library/one",
        "registry": "registry.example.test", "package-id": "p1"}
DOCKER = [(b"Host", b"cr.example.test"), (b"User-Agent", b"docker/27.0")]
MANIFEST = b"/v2/library/one/manifests/1"


class Events:
    """Collects submitted events."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit(self, event: dict[str, Any]) -> None:
        self.submitted.append(event)


def snapshot(tmp_path: Path, generation: int = 1, **sections: Any) -> Snapshot:
    document = {"rules": [RULE], "workers": 1, **sections}
    config = parse_config(document, str(tmp_path / "c.yaml"))
    return Snapshot(config, generation, StreamingProxy(Clock(), config.proxy))


def make(tmp_path: Path, **sections: Any) -> tuple[Gateway, Events, Clock]:
    clock, events = Clock(), Events()
    return Gateway(snapshot(tmp_path, **sections), events, clock), events, clock


def ask(gateway: Gateway, clock: Clock, target: bytes = MANIFEST,
        headers: list[tuple[bytes, bytes]] = DOCKER, method: bytes = b"GET",
        peer: str = "203.0.113.9", body: bytes = b"", **settings: Any) -> Any:
    connection = FakeConnection(clock, peer_host=peer, **settings)
    gateway.handle(connection.request(method, target, headers, body))
    return connection.response()


def test_a_routed_request_is_answered_and_recorded_once(tmp_path):
    gateway, events, clock = make(tmp_path)
    response = ask(gateway, clock)
    assert response.status == 307
    assert response.header("location") == (
        "https://registry.example.test/v2/library/one/manifests/1")
    [event] = events.submitted
    assert (event["image"], event["status"], event["domain"]) == ("library/one", 307,
                                                                  "cr.example.test")
    assert gateway.in_flight == 0


def test_a_swapped_snapshot_routes_new_requests(tmp_path):
    gateway, _, clock = make(tmp_path)
    assert ask(gateway, clock, b"/v2/library/two/manifests/1").status == 404
    other = dict(RULE, **{"repository-name": "library/two"})
    gateway.use(snapshot(tmp_path, 2, rules=[other]))
    assert ask(gateway, clock, b"/v2/library/two/manifests/1").status == 307
    assert ask(gateway, clock).status == 404


def test_a_trailing_dot_and_capitals_route_like_the_bare_domain(tmp_path):
    gateway, _, clock = make(tmp_path)
    headers = [(b"Host", b"CR.Example.Test.:8080"), (b"User-Agent", b"docker/27.0")]
    assert ask(gateway, clock, headers=headers).status == 307


def test_forwarded_headers_count_only_from_trusted_proxies(tmp_path):
    gateway, events, clock = make(tmp_path, trusted_proxies=["10.0.0.0/8"])
    forwarded = [*DOCKER, (b"X-Forwarded-For", b"198.51.100.7")]
    ask(gateway, clock, headers=forwarded, peer="10.1.2.3")
    ask(gateway, clock, headers=forwarded, peer="203.0.113.9")
    assert [e["origin"]["network"] for e in events.submitted] == ["198.51.100.0/24",
                                                                  "203.0.113.0/24"]


def test_bad_requests_get_one_clear_line_and_no_event(tmp_path):
    gateway, events, clock = make(tmp_path)
    two_hosts = [*DOCKER, (b"Host", b"other.test")]
    response = ask(gateway, clock, headers=two_hosts)
    assert (response.status, response.body) == (400, b"more than one Host header\n")
    response = ask(gateway, clock, method=b"POST", body=b"x" * 20, max_body_bytes=10)
    assert (response.status, response.body) == (413, b"request body larger than 10 bytes\n")
    assert events.submitted == []
    assert gateway.in_flight == 0


def test_a_failing_route_answers_500_naming_the_request_without_showing_a_traceback(tmp_path):
    gateway, _, clock = make(tmp_path)

    class Broken:
        def route(self, view: Any) -> Any:
            raise RuntimeError("boom")

    good = gateway.snapshot
    broken = dataclasses.replace(good.config, router=cast(Any, Broken()))
    gateway.use(Snapshot(broken, 2, good.forwarder))
    response = ask(gateway, clock)
    assert response.status == 500
    assert re.fullmatch(rb"internal error \(request [0-9a-f]{32}\)\n", response.body)
    assert gateway.in_flight == 0


def test_draining_closes_the_connection_after_the_answer(tmp_path):
    gateway, _, clock = make(tmp_path)
    gateway.draining = True
    assert ask(gateway, clock).header("connection") == "close"


def test_plain_http_is_redirected_once_storage_holds_the_certificate(tmp_path):
    clock, events = Clock(), Events()
    tls_config = TLSConfig(storage=str(tmp_path / "tls"),
                           verification=VerificationConfig(mode="none"))
    tls = TLSService(clock, tls_config, frozenset({"cr.example.test"}), clock=clock,
                     follower=True)
    gateway = Gateway(snapshot(tmp_path), events, clock, tls=tls, https_port=8443)
    assert ask(gateway, clock).status == 307
    CertStore(tls_config.storage, clock, "primary").save(
        "cr.example.test", self_signed("cr.example.test", 0, 86400))
    response = ask(gateway, clock, target=b"/install.sh?a=1")
    assert response.status == 308, "the follower was not told, it looked in storage"
    assert response.header("location") == "https://cr.example.test:8443/install.sh?a=1"
    assert ask(gateway, clock).status == 307, "registry clients on plain HTTP keep working"
    assert ask(gateway, clock, target=b"/.well-known/acme-challenge/x").status == 404
