"""TLS termination with ACME against a real pebble: HTTP-01, TLS-ALPN-01, unverified
domains, restart reuse and renewal, each checked through a real TLS handshake."""

from __future__ import annotations

import datetime
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server

from scarfgw.ops import metrics
from scarfgw.tls import manager
from scarfgw.tls.certs import PemFile, self_signed
from scarfgw.tls.listener import https_factory
from scarfgw.tls.manager import TLSService
from scarfgw.tls.schedule import Timing
from scarfgw.tls.settings import AcmeConfig, TLSConfig, VerificationConfig
from scarfgw.tls.store import CertStore
from scarfgw.tls.verify import expected_value, record_name
from tests.integration.pebble import PEBBLE, FakeDNS, Pebble, TLSClient, https_get, start_pebble
from tests.support import (
    deferLater,
    gateway_config,
    get,
    http_get,
    start_gateway,
    start_twistd,
    write_config,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not PEBBLE.exists(), reason="pebble is not installed (/usr/bin/pebble)"),
]

SECRET = "test-secret"
FAST = Timing(verify_backoff=(0.3,), order_backoff=(1.0,), jitter=0.0)


@pytest.fixture(scope="module")
def fake_dns() -> Any:
    server = FakeDNS()
    server.start()
    yield server
    server.port.stopListening()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeDNS) -> Any:
    running = start_pebble(tmp_path_factory.mktemp("pebble"), fake_dns.address)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def fast_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager, "DEFAULT_TIMING", FAST)


def publish_ownership(fake_dns: FakeDNS, domain: str) -> None:
    fake_dns.txt[record_name(domain)] = [expected_value(SECRET, domain)]


def tls_config(tmp_path: Path, pebble: Pebble, fake_dns: FakeDNS, domain: str,
               challenge: str = "http-01", storage: Path | None = None) -> dict[str, Any]:
    return gateway_config(
        tmp_path,
        listen={"http": f"tcp:{pebble.http_port}:interface=127.0.0.1",
                "https": f"tcp:{pebble.tls_port}:interface=127.0.0.1",
                "admin": "tcp:0:interface=127.0.0.1", "insights": None},
        rules=[{"type": "file-v1", "domain": domain, "incoming-path": "/{+path}",
                "package-id": "pkg", "outgoing-url": "https://files.example.org/{+path}"}],
        tls={"storage": str(storage or tmp_path / "tls"),
             "acme": {"directory": pebble.directory, "ca_bundle": pebble.ca_bundle,
                      "contact": "mailto:ops@example.test", "challenge": challenge},
             "verification": {"mode": "txt", "secret": SECRET, "resolver": fake_dns.address}},
    )


def orders(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("scarfgw_acme_orders_total", {"result": result}) or 0.0


def verifications(result: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "scarfgw_domain_verifications_total", {"result": result}) or 0.0


def verified_get(pebble: Pebble, domain: str, path: str) -> Any:
    """GET ``path`` over https with SNI ``domain``, verified against pebble's root (in a thread)."""
    return threads.deferToThread(https_get, pebble.tls_port, domain, path, pebble.root_pem)


@pytest_twisted.inlineCallbacks
def wait_for(condition: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        yield deferLater(0.01)


def check_pebble_certificate(leaf: x509.Certificate, pebble: Pebble, domain: str) -> None:
    assert pebble.intermediate is not None
    assert leaf.issuer == pebble.intermediate.subject
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [domain]


@pytest_twisted.inlineCallbacks
def issue_and_check(tmp_path: Path, pebble: Pebble, fake_dns: FakeDNS, domain: str,
                    challenge: str) -> Any:
    publish_ownership(fake_dns, domain)
    before = orders("success")
    gateway = yield start_gateway(tmp_path, tls_config(tmp_path, pebble, fake_dns, domain,
                                                       challenge))
    try:
        started = time.monotonic()
        yield wait_for(lambda: gateway.service.tls.has_certificate(domain))
        print(f"{challenge}: certificate for {domain} in {time.monotonic() - started:.3f} s")
        assert orders("success") == before + 1
        answer = yield verified_get(pebble, domain, "/dl/a.tgz")
        check_pebble_certificate(answer.leaf, pebble, domain)
        assert answer.alpn == "http/1.1"
        assert answer.status == 307
        assert answer.headers["location"] == "https://files.example.org/dl/a.tgz"
        plain = yield get(gateway.port, "/dl/a.tgz?x=1", Host=f"{domain}:{gateway.port}")
        assert plain.status == 308
        assert plain.header("location") == f"https://{domain}:{pebble.tls_port}/dl/a.tgz?x=1"
        gauge = metrics.REGISTRY.get_sample_value(
            "scarfgw_tls_certificate_not_after_timestamp_seconds", {"domain": domain})
        assert gauge == answer.leaf.not_valid_after_utc.timestamp()
        key = tmp_path / "tls" / "certificates" / domain / "privkey.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        unknown = yield threads.deferToThread(https_get, pebble.tls_port, "other.test", "/",
                                              None)
        assert unknown.leaf.subject.rfc4514_string() == f"CN={manager.FALLBACK_NAME}"
    finally:
        yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_http01_certificate_is_issued_and_served(tmp_path, pebble, fake_dns):
    yield issue_and_check(tmp_path, pebble, fake_dns, "http01.test", "http-01")


@pytest_twisted.inlineCallbacks
def test_tls_alpn01_certificate_is_issued_and_served(tmp_path, pebble, fake_dns):
    yield issue_and_check(tmp_path, pebble, fake_dns, "alpn.test", "tls-alpn-01")


@pytest_twisted.inlineCallbacks
def test_unverified_domain_gets_no_order_until_its_record_appears(tmp_path, pebble, fake_dns):
    domain = "unverified.test"
    fake_dns.txt[record_name(domain)] = ["scarfgw-verification=wrong"]
    before_orders, before_failures = orders("success") + orders("failure"), verifications("failure")
    gateway = yield start_gateway(tmp_path, tls_config(tmp_path, pebble, fake_dns, domain))
    try:
        yield wait_for(lambda: verifications("failure") >= before_failures + 2)
        assert not gateway.service.tls.has_certificate(domain)
        assert orders("success") + orders("failure") == before_orders
        assert not (tmp_path / "tls" / "certificates" / domain).exists()
        plain = yield get(gateway.port, "/dl/a.tgz", Host=domain)
        assert plain.status == 307
        publish_ownership(fake_dns, domain)
        yield wait_for(lambda: gateway.service.tls.has_certificate(domain))
        answer = yield verified_get(pebble, domain, "/dl/a.tgz")
        check_pebble_certificate(answer.leaf, pebble, domain)
    finally:
        yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_restart_reuses_the_stored_certificate(tmp_path, pebble, fake_dns):
    domain = "restart.test"
    publish_ownership(fake_dns, domain)
    config = tls_config(tmp_path, pebble, fake_dns, domain)
    first = yield start_gateway(tmp_path, config)
    try:
        yield wait_for(lambda: first.service.tls.has_certificate(domain))
        served = yield verified_get(pebble, domain, "/x")
    finally:
        yield first.stop()
    before = orders("success") + orders("failure")
    second = yield start_gateway(tmp_path, config)
    try:
        assert second.service.tls.has_certificate(domain)
        again = yield verified_get(pebble, domain, "/x")
        assert again.leaf.serial_number == served.leaf.serial_number
        yield deferLater(0.5)
        assert orders("success") + orders("failure") == before
    finally:
        yield second.stop()


@pytest_twisted.inlineCallbacks
def test_renewal_replaces_a_near_expiry_certificate_without_dropping_connections(
        tmp_path, pebble, fake_dns):
    domain = "renew.test"
    publish_ownership(fake_dns, domain)
    now = time.time()
    lifetime = 300.0
    # A third of the lifetime (100 s) is left in 2 s: renewal is due then.
    forced = self_signed(domain, now - lifetime * 2 / 3 + 2, lifetime)
    CertStore(str(tmp_path / "tls"), reactor, "test").save(domain, forced)
    gateway = yield start_gateway(tmp_path, tls_config(tmp_path, pebble, fake_dns, domain))
    try:
        client = yield threads.deferToThread(TLSClient, pebble.tls_port, domain, None)
        old = yield threads.deferToThread(client.get, "/a")
        assert old.leaf.serial_number == forced.leaf.serial_number
        yield wait_for(lambda: gateway.service.tls.store.load(domain).leaf != forced.leaf)
        renewed = yield verified_get(pebble, domain, "/b")
        check_pebble_certificate(renewed.leaf, pebble, domain)
        assert renewed.leaf.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
        still = yield threads.deferToThread(client.get, "/c")
        assert still.status == 307
        assert still.leaf.serial_number == forced.leaf.serial_number
        client.close()
    finally:
        yield gateway.stop()


class _Http01(resource.Resource):
    isLeaf = True

    def __init__(self, services: list[TLSService]) -> None:
        super().__init__()
        self.services = services

    def render_GET(self, request: server.Request) -> bytes:
        token = request.path.rsplit(b"/", 1)[-1].decode()
        for service in self.services:
            answer = service.http01_response(token)
            if answer is not None:
                return answer
        request.setResponseCode(404)
        return b""


class _Ok(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        return b"ok"


@pytest_twisted.inlineCallbacks
def test_two_instances_sharing_storage_order_a_domain_once(tmp_path, pebble, fake_dns):
    domain = "shared.test"
    publish_ownership(fake_dns, domain)
    config = TLSConfig(
        storage=str(tmp_path / "tls"),
        acme=AcmeConfig(pebble.directory, None,
                        PemFile(pebble.ca_bundle, Path(pebble.ca_bundle).read_bytes()),
                        "http-01"),
        verification=VerificationConfig("txt", SECRET, fake_dns.address),
    )
    services = [TLSService(reactor, config, frozenset({domain})) for _ in range(2)]
    http = yield TCP4ServerEndpoint(reactor, pebble.http_port, interface="127.0.0.1").listen(
        server.Site(_Http01(services)))
    https = yield TCP4ServerEndpoint(reactor, pebble.tls_port, interface="127.0.0.1").listen(
        https_factory(services[1], server.Site(_Ok())))
    before = orders("success") + orders("failure")
    try:
        for service in services:
            service.startService()
        yield wait_for(lambda: all(service.has_certificate(domain) for service in services))
        assert orders("success") + orders("failure") == before + 1
        answer = yield verified_get(pebble, domain, "/")
        check_pebble_certificate(answer.leaf, pebble, domain)
        assert answer.status == 200
    finally:
        for service in services:
            yield service.stopService()
        yield http.stopListening()
        yield https.stopListening()


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
@pytest_twisted.inlineCallbacks
def test_workers_answer_validations_and_serve_the_certificate(tmp_path, pebble, fake_dns,
                                                                 challenge):
    """With two processes any of them may receive the CA's validation requests and every
    client handshake: the primary orders, both answer from the shared storage."""
    domain = f"workers-{challenge}.test"
    publish_ownership(fake_dns, domain)
    config = tls_config(tmp_path, pebble, fake_dns, domain, challenge)
    config["workers"] = 2
    config_path = write_config(tmp_path, config)
    log = tmp_path / "twistd.log"
    process = start_twistd(config_path, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                answer = yield verified_get(pebble, domain, "/a")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                yield deferLater(0.2)
        check_pebble_certificate(answer.leaf, pebble, domain)
        answers = []  # at once: the primary told its worker, which does not poll
        for _ in range(12):
            answer = yield verified_get(pebble, domain, "/dl/x")
            answers.append(answer)
        assert {a.leaf.serial_number for a in answers} == {answers[0].leaf.serial_number}
        assert all(a.status == 307 for a in answers)
        plain = f"http://127.0.0.1:{pebble.http_port}/dl/x?v=1"
        redirects = []
        for _ in range(12):
            status, headers, _ = yield threads.deferToThread(http_get, plain, {"Host": domain})
            redirects.append((status, headers.get("Location")))
        assert redirects == [(308, f"https://{domain}:{pebble.tls_port}/dl/x?v=1")] * 12
        lines = log.read_text().splitlines()
        issued = [line for line in lines if f"{domain}: certificate issued" in line]
        assert len(issued) == 1 and "worker 1:" not in issued[0], "only the primary orders"
        assert any("worker 1:" in line and f"serving a certificate for {domain}" in line
                   for line in lines), "the worker serves the stored certificate"
    finally:
        process.send_signal(signal.SIGTERM)
        exit_status = yield threads.deferToThread(process.wait, 60)
    assert exit_status == 0, log.read_text()
