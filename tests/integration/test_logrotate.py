"""The shipped logrotate file run by the real ``logrotate`` against a ``twistd scarfgw``
with two workers serving requests all the while: the JSONL file is rotated twice (the older
copy compressed), the gateway writes to the new file after the USR1, and every answered
request has exactly one event across the three files."""

from __future__ import annotations

import grp
import gzip
import json
import os
import pwd
import signal
import subprocess
import threading
import time
from pathlib import Path

from scarfgw.cli import example_file
from tests.integration.registry_servers import require
from tests.support import (
    free_port,
    http_get,
    loopback_listeners,
    start_twistd,
    wait_ready,
    write_config,
)

SHIPPED_PATH = "/var/lib/scarfgw/events.jsonl"
SHIPPED_OWNER = "create 0640 scarfgw scarfgw"
SHIPPED_SIGNAL = "systemctl kill --signal=USR1 --kill-whom=main scarfgw.service"


def _logrotate_config(events: Path, pid: int) -> str:
    """The shipped file, pointed at ``events``, owned by us, signalling ``pid``."""
    shipped = example_file("logrotate")
    assert SHIPPED_PATH in shipped and SHIPPED_OWNER in shipped and SHIPPED_SIGNAL in shipped
    owner = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
    return (shipped.replace(SHIPPED_PATH, str(events))
            .replace(SHIPPED_OWNER, f"create 0640 {owner}")
            .replace(SHIPPED_SIGNAL, f"kill -USR1 {pid}"))


def test_logrotate_rotates_and_no_event_is_lost(tmp_path: Path) -> None:
    require("logrotate")
    http, admin = free_port(), free_port()
    events = tmp_path / "var" / "events.jsonl"
    config = {
        "workers": 2, "listen": loopback_listeners(http, admin),
        "rules": [{"type": "docker-v1", "domain": "cr.example.test",
                   "repository-name": "library/hello", "registry": "registry.example.test",
                   "package-id": "p1"}],
        "events": {"flush_interval": 0.05, "spool_dir": str(tmp_path / "spool"),
                   "sinks": [{"type": "jsonl", "path": str(events)}]},
    }
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log)
    answered: list[int | str] = []
    stop = threading.Event()

    def pull() -> None:
        while not stop.is_set():
            try:
                answered.append(http_get(
                    f"http://127.0.0.1:{http}/v2/library/hello/manifests/latest",
                    {"Host": "cr.example.test", "User-Agent": "docker/27.0"})[0])
            except OSError as exc:
                answered.append(repr(exc))

    rotate = tmp_path / "logrotate.conf"
    try:
        wait_ready(admin, process, log)
        rotate.write_text(_logrotate_config(events, process.pid))
        puller = threading.Thread(target=pull)
        puller.start()
        for _ in range(2):
            _wait_for_lines(events, 20)
            result = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"),
                                     str(rotate)], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
        _wait_for_lines(events, 20)
        stop.set()
        puller.join()
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    assert set(answered) == {307}, "every request answered, no worker lost"
    assert "exited" not in log.read_text()
    oldest = gzip.decompress(events.with_name("events.jsonl.2.gz").read_bytes()).decode()
    older = events.with_name("events.jsonl.1").read_text()
    newest = events.read_text()
    files = [oldest, older, newest]
    assert all(text.endswith("\n") for text in files), "whole lines only"
    ids = [json.loads(line)["request_id"] for text in files for line in text.splitlines()]
    assert all(text.count("\n") > 10 for text in files), [t.count("\n") for t in files]
    assert len(ids) == len(set(ids)) == len(answered)
    assert events.stat().st_mode & 0o777 == 0o640, "created by logrotate, then written to"


def _wait_for_lines(path: Path, count: int) -> None:
    """Wait until the gateway has written ``count`` lines to ``path`` (at most 20 s)."""
    for _ in range(400):
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines")
