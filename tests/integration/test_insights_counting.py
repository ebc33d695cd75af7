"""The counting rules of design.md at their edges, on both real engines with the same events
(DuckDB through its ingest, ClickHouse through the http sink's insert): both must give the
same, expected answers."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from scarfgw.insights.clickhouse import ClickHouseStore
from scarfgw.insights.embedded import DuckDBStore, FilePosition
from scarfgw.insights.engine import Engine
from scarfgw.insights.settings import ClickHouseConfig
from tests.integration.test_clickhouse import SETTINGS, ClickHouse, clickhouse  # noqa: F401

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "b" * 64


def pull(at: str, reference: str, *, network: str = "203.0.113.0/24",
         runtime: str = "docker", day: int = 22, method: str = "GET", status: int = 307,
         **extra: Any) -> None:
    """A docker manifest request of package ``hello`` at ``at`` (HH:MM:SS) on Nov ``day``."""
    number = len(EVENTS)
    EVENTS.append({
        "time": f"2026-11-{day:02d}T{at}.500Z", "request_id": f"{number:032x}",
        "domain": "cr.example.test", "method": method,
        "path": f"/v2/library/hello/manifests/{reference}", "status": status,
        "user_agent": f"{runtime}/1.0", "referer": None,
        "origin": {"network": network, "country": "DE", "org": None, "type": None},
        "client": {"runtime": runtime, "version": "1.0"}, "kind": "docker",
        "package": "hello", "image": "library/hello", "reference": reference,
        "backend": "registry.example.test", "auto_create_rule": None, "object": "manifest",
        "pull": method == "GET", **extra})


EVENTS: list[dict[str, Any]] = []
# Nov 22: tag pulls each within 60 s of the previous one are one session; 61 s later is new
for at in ("10:00:00", "10:00:59", "10:01:58", "10:02:59"):
    pull(at, "1.0")
# a digest right after a tag (multi-arch) joins it; a lone digest later is a pull of its own
pull("10:05:00", "2.0")
pull("10:05:01", DIGEST)
pull("10:10:00", DIGEST)
# another runtime and another network are separate downloads; HEAD, 404, cut transfers are none
pull("10:00:00", "1.0", runtime="containerd")
pull("10:00:00", "1.0", network="198.51.100.0/24")
pull("10:15:00", "3.0", method="HEAD")
pull("10:15:01", "3.0", status=404)
pull("10:15:02", "3.0", complete=False)
# a session across midnight counts on the day it began
pull("23:59:30", "1.0")
pull("00:00:20", "1.0", day=23)
pull("00:05:00", "1.0", day=23)
# docker-v2: counted under the auto-creation rule id
pull("00:00:00", "1.0", day=23, network="192.0.2.0/24", package=None,
     auto_create_rule="rule-v2", image="example/tool")


@pytest.fixture(params=["duckdb", "clickhouse"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    data = b"".join(json.dumps(event).encode() + b"\n" for event in EVENTS)
    if request.param == "duckdb":
        store = DuckDBStore(str(tmp_path / "i.duckdb"))
        (tmp_path / "events.jsonl").write_bytes(data)
        with (tmp_path / "events.jsonl").open("rb") as source:
            files = store.stage(source.fileno(), [(0, len(data))])
        store.ingest("events.jsonl", FilePosition(0, 0, "", len(data)), files)
        yield store
        store.close()
        return
    server: ClickHouse = request.getfixturevalue("clickhouse")
    insert = urllib.parse.quote("INSERT INTO scarfgw_events FORMAT JSONEachRow")
    for _ in range(2):  # the sink re-sent the batch: counted once all the same
        urllib.request.urlopen(urllib.request.Request(
            f"{server.url}?query={insert}&{SETTINGS}", data=data), timeout=10).read()
    yield ClickHouseStore(ClickHouseConfig(url=server.url, database="default",
                                           table="scarfgw_events"))


def test_sessions_digests_runtimes_networks(engine: Engine) -> None:
    day = date(2026, 11, 22)
    by_version = {(p.key, p.downloads, p.unique)
                  for p in engine.downloads("hello", day, day, "day", "version")}
    assert by_version == {("1.0", 5, 2), ("2.0", 1, 1), (DIGEST, 1, 1)}
    by_client = {(p.key, p.downloads) for p in engine.downloads("hello", day, day, "day",
                                                                "client")}
    assert by_client == {("docker", 6), ("containerd", 1)}


def test_days_weeks_and_unique_networks(engine: Engine) -> None:
    days = engine.downloads("hello", date(2026, 11, 1), date(2026, 11, 30), "day", None)
    assert [(p.period, p.downloads, p.unique) for p in days] == [
        (date(2026, 11, 22), 7, 2), (date(2026, 11, 23), 1, 1)]
    weeks = engine.downloads("hello", date(2026, 11, 1), date(2026, 11, 30), "week", None)
    assert [(p.period, p.downloads, p.unique) for p in weeks] == [
        (date(2026, 11, 16), 7, 2), (date(2026, 11, 23), 1, 1)]
    months = engine.downloads("hello", date(2026, 1, 1), date(2026, 12, 31), "year", None)
    assert [(p.period, p.downloads, p.unique) for p in months] == [(date(2026, 1, 1), 8, 3)]
    assert engine.totals(date(2026, 11, 1), date(2026, 11, 30)) == {
        "hello": (8, 0), "rule-v2": (1, 0)}


def test_a_range_starting_mid_session_does_not_count_it_again(engine: Engine) -> None:
    day = date(2026, 11, 23)
    assert [(p.downloads, p.unique) for p in engine.downloads("hello", day, day, "day",
                                                              None)] == [(1, 1)]
    assert engine.downloads("hello", date(2026, 11, 24), date(2026, 11, 30), "day", None) == []
