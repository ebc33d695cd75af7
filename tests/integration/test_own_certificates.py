"""``tls.certificates`` in a real ``twistd scarfgw``: curl (SNI, verifying against the
operator's CA) gets the operator's wildcard certificate, no ACME order is placed for the
names it covers, a SIGHUP re-reads the files, and dropping it hands the name to ACME."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.support import (
    free_port,
    jsonl_events,
    start_twistd,
    wait_ready,
    write_config,
    write_tls_pair,
)


@pytest.fixture
def acme_directory() -> Iterator[tuple[str, list[str]]]:
    """A recording stand-in for an ACME server: its URL and the paths asked for (404s)."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dir", asked
    server.shutdown()
    server.server_close()


def _curl_status(port: int, ca: trustme.CA, folder: Path) -> str:
    """The status curl gets for a docker manifest over https with SNI cr.example.test, or its
    error when the certificate does not verify against ``ca``."""
    ca_file = folder / "client-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
         f"cr.example.test:{port}:127.0.0.1", "--cacert", str(ca_file), "-A", "docker/27.0",
         f"https://cr.example.test:{port}/v2/library/hello/manifests/latest"],
        capture_output=True, text=True, timeout=30)
    return result.stdout if result.returncode == 0 else result.stderr


def test_operator_certificate_is_served_reloaded_and_never_ordered(
        tmp_path: Path, acme_directory: tuple[str, list[str]]) -> None:
    directory, asked = acme_directory
    cert, key = tmp_path / "wildcard.pem", tmp_path / "wildcard.key"
    first, second = trustme.CA(), trustme.CA()
    write_tls_pair(first, cert, key, "*.example.test")
    http, https, admin = free_port(), free_port(), free_port()
    config: dict[str, Any] = {
        "listen": {"http": f"tcp:{http}:interface=127.0.0.1",
                   "https": f"tcp:{https}:interface=127.0.0.1",
                   "admin": f"tcp:{admin}:interface=127.0.0.1", "insights": None},
        "rules": [{"type": "docker-v1", "domain": "cr.example.test",
                   "repository-name": "library/hello", "registry": "registry.example.test",
                   "package-id": "p1"}],
        "tls": {"storage": str(tmp_path / "tls"), "verification": {"mode": "none"},
                "acme": {"directory": directory},
                "certificates": [{"cert": str(cert), "key": str(key)}]},
        "events": jsonl_events(tmp_path, 0.1),
    }
    config_path = write_config(tmp_path, config)
    log = tmp_path / "twistd.log"
    process = start_twistd(config_path, log)
    try:
        wait_ready(admin, process, log)
        assert _curl_status(https, first, tmp_path) == "307"
        assert "unable to get local issuer" in _curl_status(https, second, tmp_path)

        write_tls_pair(second, cert, key, "*.example.test")
        process.send_signal(signal.SIGHUP)
        _wait_for(lambda: _curl_status(https, second, tmp_path) == "307", log)
        assert asked == [], "no ACME request while a certificate covers the name"

        del config["tls"]["certificates"]
        config_path.write_text(yaml.safe_dump(config))
        process.send_signal(signal.SIGHUP)
        _wait_for(lambda: "/dir" in asked, log)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert f"serving the certificate {cert} for *.example.test, valid until" in log.read_text()


def test_a_mismatched_pair_stops_twistd_with_the_file_named(tmp_path: Path) -> None:
    cert, key = tmp_path / "a.pem", tmp_path / "a.key"
    write_tls_pair(trustme.CA(), cert, key, "*.example.test")
    write_tls_pair(trustme.CA(), tmp_path / "b.pem", key, "*.example.test")
    config_path = write_config(tmp_path, {"tls": {"certificates": [
        {"cert": str(cert), "key": str(key)}]}})
    process = start_twistd(config_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode != 0
    assert (f"invalid config: {config_path}: tls.certificates[0]: {cert}: does not match the "
            f"private key in {key}") in output


def _wait_for(condition: Any, log: Path) -> None:
    for _ in range(100):
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached:\n" + log.read_text())
