"""SIGTERM during load on a real ``twistd scarfgw``: /readyz says 503 while a slow proxied
download finishes within the grace period, the process exits 0, and every answered request
has its event in the JSONL sink."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    docker_rule,
    free_port,
    jsonl_events,
    loopback_listeners,
    start_twistd,
    wait_ready,
    write_config,
)

pytestmark = pytest.mark.integration

MANIFEST = "/v2/library/hello/manifests/latest"
CLIENTS = 4
SLOW_SECONDS = 1.5
BODY = b"x" * 4096


class _SlowUpstream(BaseHTTPRequestHandler):
    """Answers 200 after SLOW_SECONDS; sets ``server.asked`` when a request arrives."""

    server: Any

    def do_GET(self) -> None:
        self.server.asked.set()
        time.sleep(SLOW_SECONDS)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def _client(port: int, headers: dict[str, str], statuses: list[int], deadline: float) -> None:
    """Pull over a keep-alive connection, reconnecting on errors, until connections are refused."""
    connection: http.client.HTTPConnection | None = None
    while time.monotonic() < deadline:
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", MANIFEST, headers=headers)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        except ConnectionRefusedError:
            return
        except (http.client.HTTPException, OSError):
            if connection is not None:
                connection.close()
            connection = None


def _readiness(port: int) -> int | None:
    """Status of the admin /readyz; None when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def test_sigterm_during_load_loses_no_event(tmp_path: Path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _SlowUpstream)
    upstream.asked = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    http_port, admin_port = free_port(), free_port()
    config = {
        "listen": loopback_listeners(http_port, admin_port),
        "rules": [docker_rule("cr.example.test", "registry.example.test"),
                  docker_rule("slow.example.test", "slow.example.test")],
        "proxy": {"upstreams": {"slow.example.test": f"http://127.0.0.1:{upstream.server_port}"}},
        "shutdown_grace_period": 10,
        "events": jsonl_events(tmp_path, 0.2),
    }
    config_path = write_config(tmp_path, config)
    log = tmp_path / "twistd.log"
    process = start_twistd(config_path, log)
    try:
        wait_ready(admin_port, process, log)
        deadline = time.monotonic() + 60
        pulls: list[list[int]] = [[] for _ in range(CLIENTS)]
        docker = {"Host": "cr.example.test", "User-Agent": "docker/27.0"}
        clients = [threading.Thread(target=_client, args=(http_port, docker, statuses, deadline))
                   for statuses in pulls]
        for thread in clients:
            thread.start()
        while sum(map(len, pulls)) < 500:
            time.sleep(0.01)
        slow: list[int] = []
        slow_client = threading.Thread(target=_client, args=(
            http_port, {"Host": "slow.example.test", "User-Agent": "curl/8.5.0"}, slow,
            time.monotonic() + SLOW_SECONDS))
        slow_client.start()
        assert upstream.asked.wait(5)  # type: ignore[attr-defined]
        process.send_signal(signal.SIGTERM)
        readiness = [_readiness(admin_port) for _ in range(10)]
        for thread in [*clients, slow_client]:
            thread.join(60)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        upstream.shutdown()

    assert 503 in readiness, readiness
    assert slow == [200]
    answered = [status for statuses in pulls for status in statuses]
    assert set(answered) == {307}
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(events) == len(answered) + 1
    assert len({event["request_id"] for event in events}) == len(events)
    assert not list((tmp_path / "spool").glob("*.spool")), "events left waiting in the spool"
    assert "SIGTERM received" in log.read_text()
