"""``twistd --logger=scarfgw.ops.logging.json_logger``: every stdout line of a real gateway's life
(start, a bad reload, SIGTERM) is one JSON object."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import free_port, http_get, jsonl_events, start_twistd, write_config

pytestmark = pytest.mark.integration


def test_twistd_writes_json_lines(tmp_path: Path) -> None:
    admin = free_port()
    config_path = write_config(tmp_path, {
        "listen": {"http": "tcp:0:interface=127.0.0.1",
                   "admin": f"tcp:{admin}:interface=127.0.0.1", "insights": None},
        "events": jsonl_events(tmp_path, 1.0),
    })
    process = start_twistd(config_path, twistd_args=["--logger=scarfgw.ops.logging.json_logger"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                if http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        config_path.write_text("listen: {http: 42}\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    lines = stdout.decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert b"\x1e" not in stdout and stderr == b""
    messages = {(r["namespace"], r["level"], r["message"]) for r in records}
    assert ("scarfgw.runtime.service", "info",
            "SIGTERM received: shutting down gracefully") in messages
    [refused] = [r for r in records if r["message"].startswith("config reload refused")]
    assert refused["level"] == "error"
    assert "listen.http" in refused["error"]
    assert all(r["time"].endswith("Z") for r in records)
