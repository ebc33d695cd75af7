"""The insights config section, the package catalogue and the API tokens."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from scarfgw.config import ConfigError, load_config, parse_config
from scarfgw.insights.catalogue import catalogue
from scarfgw.insights.model import Package
from scarfgw.insights.tokens import PREFIX, Tokens, new_token, token_hash

HASH = "a" * 64


def config(text: str, tmp_path: Path) -> Any:
    path = tmp_path / "scarfgw.yaml"
    path.write_text(text)
    return load_config(str(path))


def error_of(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config(text, tmp_path)
    return caught.value


def test_defaults_serve_insights_from_duckdb(tmp_path: Path) -> None:
    loaded = config("", tmp_path)
    assert loaded.listen.insights == "tcp:9190:interface=127.0.0.1"
    assert (loaded.insights.engine, loaded.insights.duckdb_path) == (
        "duckdb", str(tmp_path / "var/insights.duckdb")), "relative to the config file"
    assert loaded.insights.tokens == () and loaded.insights.badges


def test_the_example_config_has_a_working_example_token() -> None:
    example = load_config(str(Path(__file__).parents[2] / "etc" / "scarfgw.yaml"))
    grant = Tokens(example.insights.tokens).grant("sgi_example-only-do-not-use")
    assert grant is not None and grant.may_read("anything")


def test_a_token_removed_by_a_reload_stops_working_at_once() -> None:
    example = load_config(str(Path(__file__).parents[2] / "etc" / "scarfgw.yaml"))
    tokens = Tokens(example.insights.tokens)
    tokens.use(())
    assert tokens.grant("sgi_example-only-do-not-use") is None


@pytest.mark.parametrize(("text", "path", "reason"), [
    ("insights: {engine: sqlite}", "insights.engine", "expected duckdb or clickhouse"),
    ("insights: {engin: duckdb}", "insights.engin", "unknown key"),
    ("insights: {duckdb: {file: x}}", "insights.duckdb.file", "unknown key"),
    ("insights: {duckdb: {memory_limit: lots}}", "insights.duckdb.memory_limit",
     "a size like"),
    ("insights: {duckdb: {threads: 0}}", "insights.duckdb.threads", "positive integer"),
    ("insights: {clickhouse: {url: 'ftp://x'}}", "insights.clickhouse.url", "http://"),
    ("insights: {clickhouse: {table: 'a; DROP'}}", "insights.clickhouse.table",
     "plain identifier"),
    ("insights: {tokens: [{name: a, sha256: abc, packages: ['*']}]}",
     "insights.tokens[0].sha256", "64 hex digits"),
    (f"insights: {{tokens: [{{name: a, sha256: '{HASH}'}}]}}", "insights.tokens[0].packages",
     "non-empty list"),
    (f"insights: {{tokens: [{{name: a, sha256: '{HASH}', packages: ['*']}}, "
     f"{{name: a, sha256: '{HASH}', packages: ['*']}}]}}", "insights.tokens[1].name",
     "already used"),
    ("insights: {tokens: [secret]}", "insights.tokens[0]", "expected a mapping"),
    ("insights: {domain: 'https://stats.example.com/'}", "insights.domain", "host name"),
    ("events: {sinks: []}", "insights.engine", "add a {type: jsonl} sink"),
    ("listen: {insights: 9190}", "listen.insights", "expected a string"),
])
def test_bad_insights_config_names_the_key(tmp_path: Path, text: str, path: str,
                                           reason: str) -> None:
    error = error_of(text, tmp_path)
    assert error.path == path and reason in error.reason, str(error)


def test_clickhouse_needs_no_jsonl_sink_and_insights_can_be_off(tmp_path: Path) -> None:
    assert config("events: {sinks: []}\ninsights: {engine: clickhouse}\n",
                  tmp_path).insights.engine == "clickhouse"
    assert config("events: {sinks: []}\nlisten: {insights: null}\n",
                  tmp_path).listen.insights is None


def test_catalogue_of_every_rule_kind() -> None:
    rules = yaml.safe_load("""
    - {type: docker-v1, domain: cr.test, repository-name: library/hello, registry: r.io,
       package-id: hello}
    - {type: docker-v1, domain: mirror.test, repository-name: library/hello, registry: r.io,
       package-id: hello}
    - {type: docker-v2, domain: cr.test, pattern: "example/*", registry: ghcr.io, rule-id: r2}
    - {type: file-v1, domain: get.test, incoming-path: "/dl/{v}.tgz", package-id: f1}
    - {type: file-v2, domain: get.test, incoming-path: "^/x/(?<v>.*)$", package-id: f2}
    - {type: python-v1, domain: pypi.test, package-name: Six, file-name: six-1.whl,
       version: "1", backend-url: "https://f/six-1.whl", package-id: six}
    - {type: catch-all-v1, domain: get.test, package-id: all}
    - {type: pixel-v1, domain: px.test, content-type: image/png, image-base64: ""}
    """)
    loaded = parse_config({"rules": rules}, "test")
    assert catalogue(loaded.rules) == (
        Package("hello", "docker", "library/hello", ("cr.test", "mirror.test")),
        Package("r2", "docker", "example/*", ("cr.test",)),
        Package("f1", "file", "/dl/{v}.tgz", ("get.test",)),
        Package("f2", "file", "^/x/(?<v>.*)$", ("get.test",)),
        Package("six", "python", "Six", ("pypi.test",)),
        Package("all", "catchall", "get.test (catch-all)", ("get.test",)),
    )


def test_tokens_are_random_hashed_and_scoped() -> None:
    token, digest = new_token()
    other, _ = new_token()
    assert token.startswith(PREFIX) and token != other and len(token) > 40
    assert digest == hashlib.sha256(token.encode()).hexdigest() == token_hash(token)
    settings = config_tokens([("all", token, ["*"]), ("one", other, ["hello"])])
    tokens = Tokens(settings)
    assert tokens.grant(token).name == "all"  # type: ignore[union-attr]
    assert tokens.grant(other).may_read("hello")  # type: ignore[union-attr]
    assert not tokens.grant(other).may_read("six")  # type: ignore[union-attr]
    for wrong in ("", token + "x", token[:-1], "x" * 10_000, "\udcff"):
        assert tokens.grant(wrong) is None


def config_tokens(entries: list[tuple[str, str, list[str]]]) -> Any:
    document = {"insights": {"tokens": [
        {"name": name, "sha256": token_hash(token), "packages": packages}
        for name, token, packages in entries]}}
    return parse_config(document, "test").insights.tokens
