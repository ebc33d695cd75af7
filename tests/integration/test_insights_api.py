"""Insights end to end through real sockets, against both real engines with one suite: a
gateway answers the request traces of real clients, its events reach the engine (DuckDB:
the JSONL file followed by the primary; ClickHouse: the http sink), and the API on the
insights listener answers the same numbers."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet import defer, threads

from scarfgw.ops.metrics import REGISTRY
from tests.integration.test_clickhouse import SETTINGS, ClickHouse, clickhouse  # noqa: F401
from tests.support import deferLater, gateway_config, http_get, raw_request, start_gateway

pytestmark = pytest.mark.integration

TOKEN = "sgi_test-token-all"
HELLO_ONLY = "sgi_test-token-hello"
DOCKER_UA = "docker/27.0.3 go/go1.22 git-commit/abc kernel/6.1 os/linux arch/amd64"
CONTAINERD_UA = "containerd/1.6.20~ds1"
PIP_UA = 'pip/23.2.1 {"ci":null,"cpu":"x86_64","implementation":{"name":"CPython"}}'
UV_UA = "uv/0.5.1"
DIGEST = "sha256:" + "a" * 64

RULES = [
    {"type": "docker-v1", "domain": "cr.example.test", "repository-name": "library/hello",
     "registry": "registry.example.test", "package-id": "hello"},
    {"type": "python-v1", "domain": "pypi.example.test", "package-name": "six",
     "file-name": "six-1.16.0-py2.py3-none-any.whl", "version": "1.16.0",
     "backend-url": "https://files.example.test/six-1.16.0-py2.py3-none-any.whl",
     "package-id": "six"},
    {"type": "file-v1", "domain": "get.example.test",
     "incoming-path": "/download/{name}-{version}.tar.gz",
     "outgoing-url": "https://files.example.test/{name}/{version}.tar.gz", "package-id": "tool"},
]

# (method, host, path, user agent); every trace is what the real client sends (reference
# section 6, pip/uv behaviour): the comments say how many downloads each one is.
TRACES: list[tuple[str, str, str, str]] = [
    # docker multi-arch pull: index by tag, then the platform manifest by digest: 1
    ("GET", "cr.example.test", "/v2/library/hello/manifests/latest", DOCKER_UA),
    ("GET", "cr.example.test", f"/v2/library/hello/manifests/{DIGEST}", DOCKER_UA),
    # containerd: HEAD tag, then the 307 -> 401 -> token -> 307 retry of GET digest: 1
    ("HEAD", "cr.example.test", "/v2/library/hello/manifests/1.0", CONTAINERD_UA),
    ("GET", "cr.example.test", f"/v2/library/hello/manifests/{DIGEST}", CONTAINERD_UA),
    ("GET", "cr.example.test", f"/v2/library/hello/manifests/{DIGEST}", CONTAINERD_UA),
    # a blob and the API root are not pulls: 0
    ("GET", "cr.example.test", f"/v2/library/hello/blobs/{DIGEST}", DOCKER_UA),
    ("GET", "cr.example.test", "/v2/", DOCKER_UA),
    # pip: the index page (none), the wheel: 1
    ("GET", "pypi.example.test", "/simple/six/", PIP_UA),
    ("GET", "pypi.example.test", "/simple/six/six-1.16.0-py2.py3-none-any.whl", PIP_UA),
    # uv: HEAD + two GETs of one wheel: 1
    ("HEAD", "pypi.example.test", "/simple/six/six-1.16.0-py2.py3-none-any.whl", UV_UA),
    ("GET", "pypi.example.test", "/simple/six/six-1.16.0-py2.py3-none-any.whl", UV_UA),
    ("GET", "pypi.example.test", "/simple/six/six-1.16.0-py2.py3-none-any.whl", UV_UA),
    # two file versions with curl: 2; an unknown path (404) is none
    ("GET", "get.example.test", "/download/tool-1.0.tar.gz", "curl/8.5.0"),
    ("GET", "get.example.test", "/download/tool-2.0.tar.gz", "curl/8.5.0"),
    ("GET", "pypi.example.test", "/simple/nothing-here/", PIP_UA),
]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(params=["duckdb", "clickhouse"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The engine's insights section and the events section that feeds it."""
    tokens = [{"name": "ops", "sha256": _hash(TOKEN), "packages": ["*"]},
              {"name": "hello", "sha256": _hash(HELLO_ONLY), "packages": ["hello"]}]
    if request.param == "duckdb":
        yield {"insights": {"engine": "duckdb", "tokens": tokens,
                            "duckdb": {"path": str(tmp_path / "insights.duckdb")}},
               "events": {"flush_interval": 0.05, "spool_dir": str(tmp_path / "spool"),
                          "sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}]}}
        return
    server: ClickHouse = request.getfixturevalue("clickhouse")
    insert = urllib.parse.quote("INSERT INTO scarfgw_events FORMAT JSONEachRow")
    yield {"insights": {"engine": "clickhouse", "tokens": tokens,
                        "clickhouse": {"url": server.url, "database": "default",
                                       "table": "scarfgw_events"}},
           "events": {"flush_interval": 0.05, "spool_dir": str(tmp_path / "spool"),
                      "sinks": [{"type": "http",
                                 "url": f"{server.url}?query={insert}&{SETTINGS}"}]}}


@pytest_twisted.inlineCallbacks
def _run_gateway(tmp_path: Path, engine: dict[str, Any], **geoip: Any) -> Any:
    config = gateway_config(tmp_path, rules=RULES, **engine)
    config["events"]["geoip"] = geoip or None
    config["listen"]["insights"] = "tcp:0:interface=127.0.0.1"
    gateway = yield start_gateway(tmp_path, config)
    for _ in range(200):
        if gateway.service.insights.port is not None:
            break
        yield deferLater(0.01)
    return gateway


def _api(port: int, path: str, token: str | None = TOKEN,
         **headers: str) -> tuple[int, dict[str, str], bytes]:
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    return http_get(f"http://127.0.0.1:{port}{path}", headers)


@defer.inlineCallbacks
def _downloads_of(port: int, path: str, expected: int) -> Any:
    """The API's answer once it counts ``expected`` downloads (ingest is asynchronous)."""
    for _ in range(200):
        status, _, body = yield _in_thread(_api, port, path)
        document = json.loads(body)
        if status == 200 and sum(p["downloads"] for p in document["series"]) >= expected:
            return document
        yield deferLater(0.05)
    raise AssertionError(f"never reached {expected} downloads: {status} {body[:300]!r}")


def _in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    """``function`` in a thread: the blocking client must not stall the gateway's reactor."""
    return threads.deferToThread(function, *args, **kwargs)


@pytest_twisted.inlineCallbacks
def test_real_client_traces_count_as_design_md_says(tmp_path: Path,
                                                    engine: dict[str, Any]) -> Any:
    gateway = yield _run_gateway(tmp_path, engine)
    try:
        for method, host, path, agent in TRACES:
            yield raw_request(gateway.port, method, path,
                              [("Host", host), ("User-Agent", agent)])
        port = gateway.service.insights.port.getHost().port
        today = datetime.now(UTC).date().isoformat()
        hello = yield _downloads_of(port, "/api/v1/packages/hello/downloads?by=client", 2)
        six = yield _downloads_of(port, "/api/v1/packages/six/downloads?by=client", 2)
        tool = yield _downloads_of(port, "/api/v1/packages/tool/downloads?by=version", 2)
        yield deferLater(0.5)  # anything counted late would show now
        hello = yield _downloads_of(port, "/api/v1/packages/hello/downloads?by=client", 2)
        six = yield _downloads_of(port, "/api/v1/packages/six/downloads?by=client", 2)
        tool = yield _downloads_of(port, "/api/v1/packages/tool/downloads?by=version", 2)
        assert hello["series"] == [
            {"period": today, "key": "containerd", "downloads": 1, "unique": 1},
            {"period": today, "key": "docker", "downloads": 1, "unique": 1}]
        assert six["series"] == [
            {"period": today, "key": "pip", "downloads": 1, "unique": 1},
            {"period": today, "key": "uv", "downloads": 1, "unique": 1}]
        assert tool["series"] == [
            {"period": today, "key": "1.0", "downloads": 1, "unique": 1},
            {"period": today, "key": "2.0", "downloads": 1, "unique": 1}]
        # the badges' background refresh asked for the 30-day totals at start, before the
        # ingest, and the reader keeps totals for a minute: forget them
        gateway.service.insights.reader._totals.clear()
        totals = json.loads((yield _in_thread(_api, port, "/api/v1/packages"))[2])
        assert {p["id"]: (p["kind"], p["label"], p["domains"], p["downloads_30d"])
                for p in totals["packages"]} == {
            "hello": ("docker", "library/hello", ["cr.example.test"], 2),
            "six": ("python", "six", ["pypi.example.test"], 2),
            "tool": ("file", "/download/{name}-{version}.tar.gz", ["get.example.test"], 2)}
        monthly = json.loads((yield _in_thread(
            _api, port, "/api/v1/packages/six/downloads?interval=month"))[2])
        assert [(p["key"], p["downloads"], p["unique"]) for p in monthly["series"]] == [
            (None, 2, 1)]
        status, headers, body = yield _in_thread(
            _api, port, f"/api/v1/events?package=hello&from={today}&to={today}")
        events = [json.loads(line) for line in body.splitlines()]
        assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
        assert len(events) == 6 and {e["package"] for e in events} == {"hello"}  # not /v2/
        assert all("client_ip" not in e and e["origin"]["network"] == "127.0.0.0/24"
                   for e in events)
    finally:
        yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_tokens_scopes_and_bad_requests_get_json_reasons(tmp_path: Path,
                                                         engine: dict[str, Any]) -> Any:
    gateway = yield _run_gateway(tmp_path, engine)
    try:
        port = gateway.service.insights.port.getHost().port
        cases: list[tuple[str, str | None, dict[str, str], int, str]] = [
            ("/api/v1/packages", None, {}, 401, "Authorization"),
            ("/api/v1/packages", None, {"Authorization": "Basic abc"}, 401, "malformed"),
            ("/api/v1/packages", None, {"Authorization": "Bearer"}, 401, "malformed"),
            ("/api/v1/packages", "sgi_wrong", {}, 401, "unknown token"),
            ("/api/v1/packages/six/downloads", HELLO_ONLY, {}, 403, "may not read"),
            ("/api/v1/packages/nope/downloads", TOKEN, {}, 404, "unknown package"),
            ("/api/v1/packages/..%2F..%2Fetc/downloads", TOKEN, {}, 400, "malformed package"),
            ("/api/v1/packages/six/downloads?color=red", TOKEN, {}, 400, "unknown parameter"),
            ("/api/v1/packages/six/downloads?from=2026-12-05&to=2026-01-01", TOKEN, {}, 400,
             "is after"),
            ("/api/v1/packages/six/downloads?from=1900-01-01&to=2026-01-01", TOKEN, {}, 400,
             "more than"),
            ("/api/v1/packages/six/downloads?from=yesterday", TOKEN, {}, 400, "YYYY-MM-DD"),
            ("/api/v1/packages/six/downloads?interval=hour", TOKEN, {}, 400, "interval"),
            ("/api/v1/packages/six/downloads?by=ip", TOKEN, {}, 400, "by:"),
            ("/api/v1/packages/six/downloads?to=2026-01-01&to=2026-01-02", TOKEN, {}, 400,
             "2 times"),
            ("/api/v1/events", TOKEN, {}, 400, "package: required"),
            ("/api/v1/nothing", TOKEN, {}, 404, "no such API path"),
        ]
        for path, token, headers, status, reason in cases:
            got, answer, body = yield _in_thread(_api, port, path, token, **headers)
            assert (got, answer.get("Content-Type")) == (status, "application/json"), path
            assert reason in json.loads(body)["error"], (path, body)
        odd: list[tuple[str, list[tuple[str, str]], int]] = [
            ("/api/v1/packages/%ff%fe/downloads", [("Authorization", f"Bearer {TOKEN}")], 400),
            ("/api/v1/packages/six/downloads?from=%00", [("Authorization", f"Bearer {TOKEN}")],
             400),
            ("/api/v1/packages/six/downloads?%ff=1", [("Authorization", f"Bearer {TOKEN}")], 400),
            ("/api/v1/packages", [("Authorization", "Bearer \xff\xfe")], 401),
            ("/api/v1/packages", [("Authorization", f"Bearer {TOKEN} extra")], 401),
            ("/api/v1/packages", [("Authorization", "Bearer " + "x" * 5000)], 401),
        ]
        for target, sent, status in odd:
            response = yield raw_request(port, "GET", target, [("Host", "127.0.0.1"), *sent])
            assert response.status == status, (target, response.body)
            assert "error" in json.loads(response.body), target
        listing = json.loads((yield _in_thread(_api, port, "/api/v1/packages", HELLO_ONLY))[2])
        assert [p["id"] for p in listing["packages"]] == ["hello"]
        status, headers, body = yield _in_thread(
            _api, port, "/api/v1/packages/hello/companies", TOKEN, Accept="text/csv")
        assert (status, headers["Content-Type"]) == (200, "text/csv; charset=utf-8")
        assert body == b"company,downloads,unique,first_seen,last_seen\r\n"
    finally:
        yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_companies_are_orgs_that_are_not_isps_or_hosting(
        tmp_path: Path, engine: dict[str, Any], typed_databases: list[Path]) -> Any:
    overrides = tmp_path / "companies.txt"
    overrides.write_text("198.51.100.128/25 Cable Customer Inc\n")
    gateway = yield _run_gateway(tmp_path, engine, databases=[str(p) for p in typed_databases],
                                 overrides=str(overrides))
    wheel = "/simple/six/six-1.16.0-py2.py3-none-any.whl"
    # client addresses behind the trusted proxy 127.0.0.1; two clients of one network
    # with different runtimes are two downloads from one unique network
    clients = [("203.0.113.7", PIP_UA), ("203.0.113.99", UV_UA), ("100.64.3.4", PIP_UA),
               ("198.51.100.7", PIP_UA), ("198.51.100.200", UV_UA), ("192.0.2.7", PIP_UA)]
    try:
        for address, agent in clients:
            yield raw_request(gateway.port, "GET", wheel, [
                ("Host", "pypi.example.test"), ("User-Agent", agent),
                ("X-Forwarded-For", address)])
        port = gateway.service.insights.port.getHost().port
        by_type = yield _downloads_of(port, "/api/v1/packages/six/downloads?by=type", 6)
        assert {p["key"]: (p["downloads"], p["unique"]) for p in by_type["series"]} == {
            "business": (3, 2), "education": (1, 1), "isp": (1, 1), "hosting": (1, 1)}
        status, _, body = yield _in_thread(_api, port, "/api/v1/packages/six/companies")
        companies = json.loads(body)["companies"]
        assert status == 200
        assert [(c["company"], c["downloads"], c["unique"]) for c in companies] == [
            ("Example Corp", 2, 1), ("Cable Customer Inc", 1, 1), ("Uni Example", 1, 1)]
        _, _, body = yield _in_thread(
            _api, port, "/api/v1/packages/six/companies", TOKEN, Accept="text/csv")
        lines = body.decode().splitlines()
        assert lines[0] == "company,downloads,unique,first_seen,last_seen"
        assert [line.split(",")[:3] for line in lines[1:]] == [
            ["Example Corp", "2", "1"], ["Cable Customer Inc", "1", "1"],
            ["Uni Example", "1", "1"]]
    finally:
        yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_a_reload_lists_the_packages_of_the_new_rules(tmp_path: Path,
                                                      engine: dict[str, Any]) -> Any:
    gateway = yield _run_gateway(tmp_path, engine)
    try:
        port = gateway.service.insights.port.getHost().port
        document = yaml.safe_load(gateway.config_path.read_text())
        document["rules"].append({"type": "file-v1", "domain": "get.example.test",
                                  "incoming-path": "/new/{version}.zip", "package-id": "new"})
        gateway.config_path.write_text(yaml.safe_dump(document))
        config_file = gateway.service.config_file
        assert config_file is not None and config_file.reload()
        listing = json.loads((yield _in_thread(_api, port, "/api/v1/packages"))[2])
        assert [p["id"] for p in listing["packages"]] == ["hello", "six", "tool", "new"]
        status, _, _ = yield _in_thread(_api, port, "/api/v1/packages/new/downloads")
        assert status == 200
        document["insights"]["tokens"] = []
        gateway.config_path.write_text(yaml.safe_dump(document))
        assert config_file.reload()
        status, _, _ = yield _in_thread(_api, port, "/api/v1/packages")
        assert status == 401, "a token removed by a reload stops working at once"
    finally:
        yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_a_corrupt_line_is_skipped_and_counted_in_a_metric(tmp_path: Path) -> Any:
    tokens = [{"name": "ops", "sha256": _hash(TOKEN), "packages": ["*"]}]
    gateway = yield _run_gateway(tmp_path, {
        "insights": {"tokens": tokens, "duckdb": {"path": str(tmp_path / "i.duckdb")}},
        "events": {"flush_interval": 0.05, "spool_dir": str(tmp_path / "spool"),
                   "sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}]}})
    skipped = REGISTRY.get_sample_value("scarfgw_insights_lines_skipped_total") or 0.0
    try:
        with (tmp_path / "events.jsonl").open("ab") as handle:
            handle.write(b'{"time": "2026-12-05T10:00:00.000Z", "request_id": "cut\n')
        yield raw_request(gateway.port, "GET", "/download/tool-3.0.tar.gz",
                          [("Host", "get.example.test"), ("User-Agent", "curl/8.5.0")])
        port = gateway.service.insights.port.getHost().port
        tool = yield _downloads_of(port, "/api/v1/packages/tool/downloads?by=version", 1)
        assert [(p["key"], p["downloads"]) for p in tool["series"]] == [("3.0", 1)]
        assert REGISTRY.get_sample_value("scarfgw_insights_lines_skipped_total") == skipped + 1
    finally:
        yield gateway.stop()
