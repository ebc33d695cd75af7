"""TLS session resumption with real clients (openssl s_client, curl) against ``twistd
scarfgw`` with two workers: tickets issued by one process resume on the other, after a
restart, and the keys stay private."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor

from scarfgw.tls.certs import self_signed
from scarfgw.tls.store import CertStore
from tests.support import (
    docker_rule,
    free_port,
    jsonl_events,
    start_twistd,
    wait_ready,
    write_config,
)

pytestmark = pytest.mark.integration

DOMAIN = "resume.test"
PATH = "/v2/library/hello/manifests/latest"
REQUEST = (f"GET {PATH} HTTP/1.1\r\nHost: {DOMAIN}\r\nUser-Agent: docker/27.0\r\n"
           "Connection: close\r\n\r\n")
CONNECTIONS = 16


class Gateway:
    """``twistd scarfgw`` with an https listener, two workers and a stored certificate."""

    def __init__(self, tmp_path: Path, session_tickets: bool = True) -> None:
        self.tmp_path = tmp_path
        self.storage = tmp_path / "tls"
        if not (self.storage / "certificates").exists():
            store = CertStore(str(self.storage), reactor, "test")
            store.save(DOMAIN, self_signed(DOMAIN, time.time() - 60, 30 * 86400))
        self.https, self.admin = free_port(), free_port()
        self.config = write_config(tmp_path, {
            "workers": 2,
            "listen": {"http": f"tcp:{free_port()}:interface=127.0.0.1",
                       "https": f"tcp:{self.https}:interface=127.0.0.1",
                       "admin": f"tcp:{self.admin}:interface=127.0.0.1", "insights": None},
            "rules": [docker_rule(DOMAIN, "registry.example.test")],
            "events": jsonl_events(tmp_path, 0.05),
            "access_log": {"enabled": True},
            "tls": {"storage": str(self.storage), "session_tickets": session_tickets,
                    "verification": {"mode": "none"},
                    "acme": {"directory": "https://127.0.0.1:9/directory"}},
        })
        self.log = tmp_path / "twistd.log"
        self.process = start_twistd(self.config, self.log)
        wait_ready(self.admin, self.process, self.log)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) == 0, self.log.read_text()


@pytest.fixture
def gateway(tmp_path: Path) -> Any:
    running = Gateway(tmp_path)
    yield running
    if running.process.poll() is None:
        running.stop()


def s_client(port: int, version: str, session: Path, save: bool) -> str:
    """One HTTPS request by ``openssl s_client``, saving or offering the session in
    ``session``; its output (it waits for the server to close, so the tickets are in)."""
    argv = ["openssl", "s_client", "-ign_eof", f"-tls{version}", "-connect",
            f"127.0.0.1:{port}", "-servername", DOMAIN, "-sess_out" if save else "-sess_in",
            str(session)]
    done = subprocess.run(argv, input=REQUEST.encode(), capture_output=True, timeout=30)
    output = done.stdout.decode("latin-1")
    assert "HTTP/1.1 307" in output, output
    return output


def _answered(gateway: Gateway, expected: int) -> list[str]:
    """The access-log lines of the answered requests, once ``expected`` are in (or after 5
    s): a worker's lines reach the log through the primary, a moment after the client has
    its answer."""
    for _ in range(100):
        answered = [line for line in gateway.log.read_text().splitlines()
                    if f"GET {DOMAIN}{PATH} 307" in line]
        if len(answered) >= expected:
            break
        time.sleep(0.05)
    return answered


@pytest.mark.parametrize("version", ["1_3", "1_2"])
def test_openssl_sessions_resume_on_both_workers_and_after_a_restart(gateway, version):
    session = gateway.tmp_path / f"session-{version}.pem"
    assert "\nNew," in s_client(gateway.https, version, session, save=True)
    resumed = ["\nReused," in s_client(gateway.https, version, session, save=False)
               for _ in range(CONNECTIONS)]
    assert all(resumed), resumed
    answered = _answered(gateway, CONNECTIONS + 1)
    by_worker = sum("worker 1:" in line for line in answered)
    assert len(answered) == CONNECTIONS + 1 and 0 < by_worker < len(answered), \
        "both processes resumed sessions (the kernel spreads connections over them)"
    gateway.stop()
    restarted = Gateway(gateway.tmp_path)
    try:
        assert "\nReused," in s_client(restarted.https, version, session, save=False)
    finally:
        restarted.stop()


def test_curl_resumes_its_tls13_sessions(gateway):
    """curl uses a TLS 1.3 ticket once, so every resumption must bring a fresh one (with
    TLS 1.2 curl resumes by session ID only, which needs a server-side cache: none here, as
    in Caddy and nginx's default)."""
    url = f"https://{DOMAIN}:{gateway.https}{PATH}"
    argv = ["curl", "-v", "-k", "-sS", "-o", "/dev/null", "--tlsv1.3", "--resolve",
            f"{DOMAIN}:{gateway.https}:127.0.0.1", "-A", "docker/27.0", "-H",
            "Connection: close", *[url] * CONNECTIONS]
    done = subprocess.run(argv, capture_output=True, timeout=60)
    trace = done.stderr.decode("latin-1")
    assert done.returncode == 0, trace
    assert trace.count("< HTTP/1.1 307") == CONNECTIONS
    assert trace.count("handshake, Certificate (11)") == 1, "only the first is a full handshake"


def test_ticket_keys_are_private_and_never_logged(gateway):
    s_client(gateway.https, "1_3", gateway.tmp_path / "session.pem", save=True)
    keys = list((gateway.storage / "tickets").iterdir())
    assert len(keys) == 1 and keys[0].stat().st_mode & 0o777 == 0o600
    assert (gateway.storage / "tickets").stat().st_mode & 0o777 == 0o700
    gateway.stop()
    log = gateway.log.read_text()
    secret = keys[0].read_bytes()
    assert secret.hex() not in log and secret[16:48].hex() not in log


def test_session_tickets_off_means_full_handshakes(tmp_path):
    gateway = Gateway(tmp_path, session_tickets=False)
    try:
        tls13, tls12 = tmp_path / "session-1_3.pem", tmp_path / "session-1_2.pem"
        s_client(gateway.https, "1_3", tls13, save=True)
        assert not tls13.exists(), "no TLS 1.3 ticket was issued"
        s_client(gateway.https, "1_2", tls12, save=True)
        assert "\nNew," in s_client(gateway.https, "1_2", tls12, save=False)
        assert not (gateway.storage / "tickets").exists()
    finally:
        gateway.stop()
