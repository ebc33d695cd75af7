"""``scarfgw stats`` asking the API of a running gateway: on whatever address its
``listen.insights`` endpoint names, IPv6 included."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from scarfgw.cli import main


class _V6Server(HTTPServer):
    address_family = socket.AF_INET6


class _API(BaseHTTPRequestHandler):
    asked: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        _API.asked.append((self.path.partition("?")[0], self.headers["Authorization"]))
        body = json.dumps({"series": [{"key": None, "downloads": 7, "unique": 3}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def api() -> Iterator[int]:
    server = _V6Server(("::1", 0), _API)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_stats_asks_the_api_on_an_ipv6_insights_listener(
        tmp_path: Path, api: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "busy.duckdb").mkdir()  # a store DuckDB cannot open: the gateway holds it
    config = tmp_path / "scarfgw.yaml"
    config.write_text(json.dumps({
        "listen": {"http": "tcp:0:interface=127.0.0.1", "admin": None,
                   "insights": f"tcp6:{api}:interface=\\:\\:1"},
        "events": {"sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}]},
        "insights": {"duckdb": {"path": str(tmp_path / "busy.duckdb")}},
        "rules": [{"type": "file-v1", "domain": "get.example.test", "package-id": "tool",
                   "incoming-path": "/{name}.tgz",
                   "outgoing-url": "https://files.example.test/{name}.tgz"}]}))
    monkeypatch.setenv("SCARFGW_TOKEN", "sgi_test")
    assert main(["stats", "--config", str(config)]) == 0
    assert _API.asked == [("/api/v1/packages/tool/downloads", "Bearer sgi_test")]
    assert capsys.readouterr().out.splitlines()[2].split() == ["tool", "7", "3"]
