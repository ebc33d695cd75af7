"""The ``http`` sink into a real ClickHouse (Debian ``clickhouse-server``) with the shipped
``etc/clickhouse.sql``: a load run with a ClickHouse outage in the middle ends with every
event in the table exactly once."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from scarfgw.ops.metrics import REGISTRY
from tests.support import (
    deferLater,
    docker_rule,
    free_port,
    gateway_config,
    raw_request,
    start_gateway,
)

pytestmark = pytest.mark.integration

DDL = Path(__file__).parents[2] / "etc" / "clickhouse.sql"
SETTINGS = ("input_format_import_nested_json=1&input_format_skip_unknown_fields=1"
            "&date_time_input_format=best_effort")
REQUESTS = 3000
CONCURRENCY = 20
PAUSE = 0.02  # per client between requests: at most 1000 requests/s, the run lasts > 3 s
MANIFEST = "/v2/library/hello/manifests/latest"
DOCKER = [("Host", "cr.example.test"), ("User-Agent", "docker/27.0")]

CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>1</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <path>{data}/</path>
    <tmp_path>{data}/tmp/</tmp_path>
    <user_files_path>{data}/user_files/</user_files_path>
    <format_schema_path>{data}/format_schemas/</format_schema_path>
    <mark_cache_size>67108864</mark_cache_size>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
</yandex>
"""

USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default/></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default/></quotas>
</yandex>
"""


class ClickHouse:
    """A ClickHouse server on loopback with its data under a temporary directory."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.log = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        (directory / "users.xml").write_text(USERS)
        (directory / "config.xml").write_text(CONFIG.format(
            http=self.port, tcp=free_port(), data=directory / "data"))

    @property
    def url(self) -> str:
        """Base URL of the HTTP interface."""
        return f"http://127.0.0.1:{self.port}/"

    def query(self, sql: str) -> str:
        """Run ``sql`` (blocking; quick queries only)."""
        request = urllib.request.Request(self.url, data=sql.encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.read().decode())

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Start the server and wait until it answers queries."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--config-file={self.directory / 'config.xml'}"],
                cwd=self.directory, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(300):
            assert self.process.poll() is None, self.log.read_text()
            try:
                self.query("SELECT 1")
                return
            except OSError:
                yield deferLater(0.05)
        raise AssertionError("ClickHouse did not start:\n" + self.log.read_text())

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop the server (SIGTERM: running inserts finish and are answered) and wait."""
        assert self.process is not None
        self.process.terminate()
        while self.process.poll() is None:
            yield deferLater(0.05)

    def kill(self) -> None:
        """Make sure the server is gone (teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[ClickHouse]:
    binary = shutil.which("clickhouse-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        pytest.skip("clickhouse-server is not installed (Debian package clickhouse-server)")
    directory = tmp_path / "clickhouse"
    directory.mkdir()
    server = ClickHouse(binary, directory)
    pytest_twisted.blockon(server.start())
    server.query(DDL.read_text())
    yield server
    server.kill()


def _spooled() -> float:
    return REGISTRY.get_sample_value("scarfgw_events_spooled_total") or 0.0


@pytest_twisted.inlineCallbacks
def test_outage_in_the_middle_of_a_load_loses_and_duplicates_nothing(
        tmp_path: Path, clickhouse: ClickHouse) -> Any:
    insert = urllib.parse.quote("INSERT INTO scarfgw_events FORMAT JSONEachRow")
    sink = {"type": "http", "url": f"{clickhouse.url}?query={insert}&{SETTINGS}", "timeout": 2}
    rule = docker_rule("cr.example.test", "registry.example.test")
    config = gateway_config(tmp_path, rules=[rule])
    config["events"].update(sinks=[sink], batch_size=100, queue_limit=500)
    gateway = yield start_gateway(tmp_path, config)
    spooled_before = _spooled()
    statuses: list[int] = []

    @defer.inlineCallbacks
    def pull(count: int) -> Any:
        for _ in range(count):
            response = yield raw_request(gateway.port, "GET", MANIFEST, DOCKER)
            statuses.append(response.status)
            yield deferLater(PAUSE)

    @defer.inlineCallbacks
    def reached(count: int) -> Any:
        while len(statuses) < count:
            yield deferLater(0.01)

    try:
        load = defer.gatherResults([pull(REQUESTS // CONCURRENCY) for _ in range(CONCURRENCY)])
        yield reached(REQUESTS // 4)
        rows_before_outage = int(clickhouse.query("SELECT count() FROM scarfgw_events"))
        yield clickhouse.stop()
        answered_at_outage = len(statuses)
        yield reached(min(answered_at_outage + REQUESTS // 4, REQUESTS))
        yield clickhouse.start()
        yield load
        for _ in range(600):
            if int(clickhouse.query("SELECT count() FROM scarfgw_events")) >= REQUESTS:
                break
            yield deferLater(0.1)
    finally:
        yield gateway.stop()

    assert statuses == [307] * REQUESTS
    assert rows_before_outage > 0 and answered_at_outage <= REQUESTS * 3 // 4
    assert _spooled() > spooled_before
    rows, distinct = clickhouse.query(
        "SELECT count(), uniqExact(request_id) FROM scarfgw_events").split()
    assert (int(rows), int(distinct)) == (REQUESTS, REQUESTS)
    sample = clickhouse.query("SELECT kind, image, pull, `origin.network`, `client.runtime` "
                              "FROM scarfgw_events LIMIT 1 FORMAT TSV")
    assert sample.split() == ["docker", "library/hello", "1", "127.0.0.0/24", "docker"]
