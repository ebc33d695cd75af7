"""Insights in a real ``twistd scarfgw`` with workers: real pip, uv, skopeo and curl download
through it, the primary ingests the JSONL file written by every process, the API counts
each client once, and the numbers survive logrotate + ``kill -USR1`` and a restart;
``scarfgw stats`` prints them (through the API while the gateway holds the store, from the
file once it is stopped)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.integration.registry_image import write_oci_layout
from tests.integration.registry_servers import Registry, registry, skopeo
from tests.integration.test_real_clients import (  # noqa: F401
    WHEELS,
    python_rules,
    static_backend,
    wheels,
)
from tests.support import REPO, free_port, http_get, start_twistd, twistd_env, wait_ready

pytestmark = pytest.mark.integration

TOKEN = "sgi_twistd-test"
UV = Path(sys.executable).parent / "uv"


@pytest.fixture(scope="module")
def docker_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain docker-registry holding library/hello:latest."""
    image = write_oci_layout(tmp_path_factory.mktemp("image") / "layout")
    with registry(tmp_path_factory.mktemp("registry")) as running:
        pushed = skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:latest",
                        f"docker://{running.host}/library/hello:latest")
        assert pushed.returncode == 0, pushed.stderr[-2000:]
        yield running


class Gateway:
    """A twistd scarfgw with insights, started and restarted on the same config."""

    def __init__(self, folder: Path, rules: list[dict[str, Any]], upstream: str) -> None:
        self.folder = folder
        self.http, self.admin, self.insights = free_port(), free_port(), free_port()
        self.config = folder / "scarfgw.yaml"
        self.config.write_text(json.dumps({
            "workers": 2,
            "listen": {"http": f"tcp:{self.http}:interface=127.0.0.1",
                       "admin": f"tcp:{self.admin}:interface=127.0.0.1",
                       "insights": f"tcp:{self.insights}:interface=127.0.0.1"},
            "rules": rules,
            "proxy": {"upstreams": {"registry.test": upstream}},
            "events": {"flush_interval": 0.1, "spool_dir": str(folder / "spool"),
                       "sinks": [{"type": "jsonl", "path": str(folder / "events.jsonl")}]},
            "insights": {"duckdb": {"path": str(folder / "insights.duckdb")}, "tokens": [
                {"name": "t", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                 "packages": ["*"]}]},
        }))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.folder / "twistd.log"
        self.process = start_twistd(self.config, log)
        wait_ready(self.admin, self.process, log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)

    def downloads(self, package: str, by: str = "client") -> dict[str, int]:
        status, _, body = http_get(
            f"http://127.0.0.1:{self.insights}/api/v1/packages/{package}/downloads?by={by}",
            {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, body
        return {point["key"]: point["downloads"] for point in json.loads(body)["series"]}

    def wait_for(self, package: str, expected: dict[str, int]) -> None:
        """Until the API counts ``expected``; then a second more, to see nothing extra."""
        for _ in range(200):
            if self.downloads(package) == expected:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        assert self.downloads(package) == expected


def run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]


def test_real_clients_counted_through_rotation_and_restart(
        tmp_path: Path, wheels: Path, static_backend: str,  # noqa: F811
        docker_registry: Registry) -> None:
    docker = {"type": "docker-v1", "domain": "127.0.0.1", "repository-name": "library/hello",
              "registry": "registry.test", "package-id": "hello"}
    gateway = Gateway(tmp_path, [docker, *python_rules(wheels, static_backend)],
                      docker_registry.url)
    index = f"http://127.0.0.1:{gateway.http}/simple/"
    wheel_url = f"{index}six/{WHEELS['six']}"
    gateway.start()
    try:
        run(sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
            "--no-cache-dir", "--index-url", index, "--target", str(tmp_path / "pip"),
            "six", "idna")
        run(str(UV), "pip", "install", "--no-cache", "--index-url", index, "--target",
            str(tmp_path / "uv"), "six")
        run("skopeo", "copy", "--src-tls-verify=false",
            f"docker://127.0.0.1:{gateway.http}/library/hello:latest",
            f"dir:{tmp_path / 'image'}")
        gateway.wait_for("id-six", {"pip": 1, "uv": 1})
        gateway.wait_for("id-idna", {"pip": 1})
        gateway.wait_for("hello", {"skopeo": 1})

        events = tmp_path / "events.jsonl"
        os.rename(events, str(events) + ".1")  # logrotate, then the signal
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGUSR1)
        run("curl", "-sS", "-o", os.devnull, wheel_url)
        gateway.wait_for("id-six", {"pip": 1, "uv": 1, "curl": 1})
        assert events.exists()

        gateway.stop()
        gateway.start()
        gateway.wait_for("id-six", {"pip": 1, "uv": 1, "curl": 1})
        run("curl", "-sS", "-o", os.devnull, f"{index}idna/{WHEELS['idna']}")
        gateway.wait_for("id-idna", {"pip": 1, "curl": 1})

        running = subprocess.run(
            [sys.executable, "-m", "scarfgw.cli", "stats", "--config", str(gateway.config),
             "--by", "client"], capture_output=True, text=True, timeout=60,
            env={**twistd_env(), "SCARFGW_TOKEN": TOKEN}, cwd=REPO)
        assert running.returncode == 0, running.stderr
    finally:
        gateway.stop()
    stopped = subprocess.run(
        [sys.executable, "-m", "scarfgw.cli", "stats", "--config", str(gateway.config),
         "--package", "id-six", "--by", "client"],
        capture_output=True, text=True, timeout=60, env=twistd_env(), cwd=REPO)
    assert stopped.returncode == 0, stopped.stderr
    rows = [line.split() for line in stopped.stdout.splitlines()[2:]]
    assert sorted(rows) == [["id-six", "curl", "1", "1"], ["id-six", "pip", "1", "1"],
                            ["id-six", "uv", "1", "1"]]
    assert sorted(line.split() for line in running.stdout.splitlines()[2:]) == [
        ["hello", "skopeo", "1", "1"], ["id-idna", "curl", "1", "1"],
        ["id-idna", "pip", "1", "1"], *sorted(rows)]


def test_a_second_instance_on_the_same_store_stops_with_a_clear_error(tmp_path: Path) -> None:
    first_folder, second_folder = tmp_path / "a", tmp_path / "b"
    first_folder.mkdir()
    second_folder.mkdir()
    first = Gateway(first_folder, [], "http://127.0.0.1:9")
    second = Gateway(second_folder, [], "http://127.0.0.1:9")
    document = json.loads(second.config.read_text())
    document["insights"]["duckdb"]["path"] = str(first_folder / "insights.duckdb")
    second.config.write_text(json.dumps(document))
    first.start()
    try:
        process = start_twistd(second.config, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = process.communicate(timeout=60)
        output = (stdout + stderr).decode()
        assert process.returncode != 0
        assert f"cannot open the insights store {first_folder / 'insights.duckdb'}" in output
        assert "Traceback" not in output
    finally:
        first.stop()


def test_an_insights_port_taken_stops_the_start_with_one_line(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, [], "http://127.0.0.1:9")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", gateway.insights))
        taken.listen(1)
        process = start_twistd(gateway.config, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = process.communicate(timeout=60)
    output = (stdout + stderr).decode()
    assert process.returncode == 1, output
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if "scarfgw: cannot" in line]
    assert line.endswith(f"scarfgw: cannot listen for insights on "
                         f"'tcp:{gateway.insights}:interface=127.0.0.1': Address already in use")


def test_a_shutdown_interrupts_a_long_ingest_and_the_restart_stores_every_event_once(
        tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, [], "http://127.0.0.1:9")
    template = (b'{"time":"2026-11-22T10:00:00.000Z","request_id":"%d","domain":"d.test",'
                b'"method":"GET","path":"/simple/six/six.whl","status":307,'
                b'"user_agent":"pip/23.2.1","origin":{"network":"10.0.0.0/24"},'
                b'"client":{"runtime":"pip","version":"23.2.1"},"kind":"python",'
                b'"package":"six","version":"1.16.0","file":"six.whl"}\n')
    backlog = 400_000  # a chunk takes a second or more to go in, even on an idle machine
    with (tmp_path / "events.jsonl").open("wb") as out:
        for start in range(0, backlog, 100_000):
            out.write(b"".join(template % n for n in range(start, start + 100_000)))
    gateway.start()
    assert gateway.process is not None
    began = time.monotonic()
    gateway.stop()
    assert gateway.process.returncode == 0
    assert time.monotonic() - began < 5, "the shutdown waited for the chunk"
    assert "insights ingest stopped for the shutdown" in (tmp_path / "twistd.log").read_text()
    gateway.start()
    try:
        for _ in range(600):
            body = http_get(f"http://127.0.0.1:{gateway.admin}/metrics")[2]
            if f"scarfgw_insights_events_ingested_total {float(backlog)}".encode() in body:
                break
            time.sleep(0.1)
    finally:
        gateway.stop()
    with duckdb.connect(str(tmp_path / "insights.duckdb"), read_only=True) as store:
        assert store.execute("SELECT count(*), count(DISTINCT request_id) FROM events"
                             ).fetchone() == (backlog, backlog)
