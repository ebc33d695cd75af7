"""``insights.domain``: the insights site (served by the primary on ``listen.insights``) on
the public listeners, with a certificate from a real pebble, reached through the gateway's
plain and HTTPS listeners."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import threads

from scarfgw.insights.tokens import token_hash
from scarfgw.tls import manager
from scarfgw.tls.schedule import Timing
from scarfgw.tls.verify import expected_value, record_name
from tests.integration.pebble import PEBBLE, FakeDNS, https_get, start_pebble
from tests.integration.test_acme_pebble import wait_for
from tests.support import (
    free_port,
    gateway_config,
    get,
    http_get,
    loopback_listeners,
    raw_request,
    start_gateway,
    start_twistd,
    wait_ready,
    write_config,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not PEBBLE.exists(), reason="pebble is not installed (/usr/bin/pebble)"),
]

SECRET = "test-secret"
DOMAIN = "stats.test"
TOKEN = "sgi_domain-test"


@pytest.fixture
def pebble_dns(tmp_path_factory: pytest.TempPathFactory) -> Any:
    dns = FakeDNS()
    dns.start()
    running = start_pebble(tmp_path_factory.mktemp("pebble"), dns.address)
    yield running, dns
    running.stop()
    dns.port.stopListening()


@pytest_twisted.inlineCallbacks
def test_insights_domain_gets_a_certificate_and_serves_the_site(
        tmp_path: Path, pebble_dns: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(manager, "DEFAULT_TIMING",
                        Timing(verify_backoff=(0.3,), order_backoff=(1.0,), jitter=0.0))
    pebble, dns = pebble_dns
    dns.txt[record_name(DOMAIN)] = [expected_value(SECRET, DOMAIN)]
    config = gateway_config(
        tmp_path,
        listen={"http": f"tcp:{pebble.http_port}:interface=127.0.0.1",
                "https": f"tcp:{pebble.tls_port}:interface=127.0.0.1",
                "admin": "tcp:0:interface=127.0.0.1",
                "insights": f"tcp:{free_port()}:interface=127.0.0.1"},
        rules=[{"type": "file-v1", "domain": "get.test", "incoming-path": "/{+path}",
                "package-id": "pkg", "outgoing-url": "https://files.example.org/{+path}"}],
        insights={"domain": DOMAIN, "duckdb": {"path": str(tmp_path / "insights.duckdb")},
                  "tokens": [{"name": "ops", "sha256": token_hash(TOKEN), "packages": ["*"]}]},
        tls={"storage": str(tmp_path / "tls"),
             "acme": {"directory": pebble.directory, "ca_bundle": pebble.ca_bundle,
                      "contact": "mailto:ops@example.test"},
             "verification": {"mode": "txt", "secret": SECRET, "resolver": dns.address}},
    )
    gateway = yield start_gateway(tmp_path, config)
    try:
        yield wait_for(lambda: gateway.service.insights.port is not None)
        yield wait_for(lambda: gateway.service.tls.has_certificate(DOMAIN))
        badge = yield threads.deferToThread(https_get, pebble.tls_port, DOMAIN,
                                            "/badge/downloads/pkg.svg?style=flat-square",
                                            pebble.root_pem)
        assert badge.status == 200
        assert badge.headers["content-type"].startswith("image/svg+xml")
        assert badge.headers["cache-control"] == "public, max-age=300"
        san = badge.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [DOMAIN]
        assert pebble.intermediate is not None and badge.leaf.issuer == pebble.intermediate.subject
        scarf = yield threads.deferToThread(https_get, pebble.tls_port, DOMAIN,
                                            "/package/installs-badge/pkg", pebble.root_pem)
        assert scarf.status == 200
        unknown = yield threads.deferToThread(https_get, pebble.tls_port, DOMAIN,
                                              "/badge/downloads/nope.svg", pebble.root_pem)
        assert unknown.status == 404
        home = yield threads.deferToThread(https_get, pebble.tls_port, DOMAIN, "/",
                                           pebble.root_pem)
        assert home.status == 200 and home.headers["content-type"].startswith("text/html")

        plain = yield get(gateway.port, "/badge/downloads/pkg.svg", Host=DOMAIN)
        assert plain.status == 308
        assert plain.header("location") == (f"https://{DOMAIN}:{pebble.tls_port}"
                                            "/badge/downloads/pkg.svg")

        # signing in is a POST with a form body; the site sees https and marks the cookie
        # Secure (the plain listener believes X-Forwarded-Proto from a trusted proxy)
        body = f"token={TOKEN}".encode()
        signed = yield raw_request(gateway.port, "POST", "/session",
                                   [("Host", DOMAIN), ("X-Forwarded-Proto", "https"),
                                    ("Content-Type", "application/x-www-form-urlencoded")],
                                   body)
        assert signed.status == 303
        cookie = signed.header("set-cookie") or ""
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie
        page = yield get(gateway.port, "/packages/pkg", Host=DOMAIN, X_Forwarded_Proto="https",
                         Cookie=cookie.split(";")[0])
        assert page.status == 200 and b"Top companies" in page.body
        # the rule domain still routes as before
        rule = yield get(gateway.port, "/dl/a.tgz", Host="get.test")
        assert rule.status == 307
    finally:
        yield gateway.stop()


def test_workers_hand_the_insights_domain_to_the_primary(tmp_path: Path) -> None:
    """With workers, the public listener of every worker reaches the primary's site."""
    http, admin, insights = free_port(), free_port(), free_port()
    config = gateway_config(
        tmp_path, workers=2, listen={**loopback_listeners(http, admin),
                                     "insights": f"tcp:{insights}:interface=127.0.0.1"},
        rules=[{"type": "file-v1", "domain": "get.test", "incoming-path": "/{+path}",
                "package-id": "pkg", "outgoing-url": "https://files.example.org/{+path}"}],
        insights={"domain": DOMAIN, "duckdb": {"path": str(tmp_path / "insights.duckdb")},
                  "tokens": [{"name": "ops", "sha256": token_hash(TOKEN), "packages": ["*"]}]})
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log)
    try:
        wait_ready(admin, process, log)
        for _ in range(100):  # the primary's insights listener, bound beside the others
            with contextlib.suppress(OSError):
                if http_get(f"http://127.0.0.1:{insights}/badge/downloads/pkg.svg")[0] == 200:
                    break
            time.sleep(0.05)
        # new connections spread over the workers; every one of them answers
        answers = [http_get(f"http://127.0.0.1:{http}/badge/downloads/pkg.svg",
                            {"Host": DOMAIN}) for _ in range(12)]
        assert {status for status, _, _ in answers} == {200}
        assert all(headers["Content-Type"].startswith("image/svg+xml")
                   for _, headers, _ in answers)
        status, _, body = http_get(f"http://127.0.0.1:{http}/", {"Host": DOMAIN})
        assert status == 200 and b'name="token"' in body
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
