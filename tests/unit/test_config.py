"""Config loading: defaults, manifests, and errors that name file, key path and reason."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import trustme

from scarfgw.cli import example_file
from scarfgw.config import ConfigError, load_config, parse_documents, read_documents
from tests.support import write_tls_pair

DOCKER = {"type": "docker-v1", "domain": "cr.test", "repository-name": "a/b",
          "registry": "reg.test", "package-id": "p"}


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return caught.value


def test_example_config_loads() -> None:
    config = load_config(str(Path(__file__).parents[2] / "scarfgw" / "etc" / "scarfgw.yaml"))
    assert config.listen.http == "tcp:8080"
    assert len(config.router.domains) == 3
    assert config.warnings == ()


def test_example_data_lands_next_to_the_config_or_in_the_data_dir(tmp_path: Path) -> None:
    beside = load_config(str(write(tmp_path, example_file("config"))))
    assert beside.events.sinks[0]["path"] == str(tmp_path / "var" / "events.jsonl")
    assert beside.insights.duckdb_path == str(tmp_path / "var" / "insights.duckdb")
    placed = example_file("config", "/var/lib/scarfgw")
    config = load_config(str(write(tmp_path, placed)))
    assert config.events.sinks[0]["path"] == "/var/lib/scarfgw/events.jsonl"
    assert config.events.spool_dir == "/var/lib/scarfgw/spool"
    assert config.insights.duckdb_path == "/var/lib/scarfgw/insights.duckdb"
    assert "#   storage: /var/lib/scarfgw/tls" in placed, "the commented TLS block too"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, "")))
    assert (config.listen.http, config.listen.https) == ("tcp:8080", None)
    assert config.events.batch_size == 500 and config.proxy.response_timeout == 60


def test_manifest_json_loads_as_whole_file_and_as_manifest_key(tmp_path: Path) -> None:
    manifest = write(tmp_path, json.dumps({"rules": [DOCKER]}), "manifest.json")
    assert len(load_config(str(manifest)).rules) == 1
    config = load_config(str(write(tmp_path, "manifest: manifest.json\nrules: []\n")))
    assert config.router.domains == frozenset({"cr.test"})
    example = Path(__file__).parents[2] / "etc" / "manifest.example.json"
    assert len(load_config(str(example)).rules) == 4


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("listen: {htp: 'tcp:1'}", "listen.htp", "unknown key"),
        ("nonsense: 1", "nonsense", "unknown key"),
        ("proxy: {connect_timeout: 0}", "proxy.connect_timeout", "expected a positive number"),
        ("proxy: {upstreams: {ghcr.io: 'ftp://x'}}", "proxy.upstreams.ghcr.io", "expected an http"),
        ("trusted_proxies: ['not-a-net']", "trusted_proxies[0]", "not an IP network"),
        ("rules: [{type: nope}]", "rules[0].type", "unknown rule type 'nope'"),
        ("rules: [{type: docker-v2, domain: d, pattern: 'a/*,b', rule-id: r, registry: x}]",
         "rules[0].pattern", "trailing"),
        ("rules: [{type: file-v1, domain: d, package-id: p, incoming-path: '/{x'}]",
         "rules[0].incoming-path", "invalid URI template"),
        ("tls: {acme: {challenge: dns-01}}", "tls.acme.challenge", "expected http-01"),
        ("events: {batch_size: -3}", "events.batch_size", "expected a positive integer"),
    ],
)
def test_errors_name_file_key_path_and_reason(tmp_path: Path, text: str, path: str,
                                              reason: str) -> None:
    config_path = write(tmp_path, text)
    error = error_of(config_path)
    assert error.source == str(config_path) and error.path == path
    assert reason in error.reason
    assert str(error).startswith(f"{config_path}: {path}: ")


def test_syntax_errors_and_unreadable_files(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "rules: [\n"))
    assert "invalid YAML/JSON: line" in error.reason
    assert "cannot read file" in error_of(tmp_path / "missing.yaml").reason
    assert "top level must be a mapping" in error_of(write(tmp_path, "- 1\n")).reason


def test_manifest_errors_name_the_manifest_file(tmp_path: Path) -> None:
    write(tmp_path, json.dumps({"rules": [{**DOCKER, "registry": 5}]}), "m.json")
    error = error_of(write(tmp_path, "manifest: m.json\n"))
    assert error.source.endswith("m.json") and error.path == "rules[0].registry"


def test_unknown_rule_keys_are_warnings(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, json.dumps({"rules": [{**DOCKER, "extra": 1}]}))))
    assert config.warnings == ("rules[0].extra: unknown key ignored",)


def test_https_with_txt_verification_needs_a_secret(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "listen: {https: 'tcp:8443'}\n"))
    assert error.path == "tls.verification.secret"
    config = load_config(str(write(tmp_path, "listen: {https: 'tcp:8443'}\n"
                                             "tls: {verification: {mode: none}}\n")))
    assert config.listen.https == "tcp:8443"


def test_geoip_and_access_log_sections(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, "events: {geoip: {databases: [a.mmdb, b.mmdb]}}\n"
                                             "access_log: {enabled: true, sample: 0.25}\n")))
    assert config.events.geoip_databases == (str(tmp_path / "a.mmdb"), str(tmp_path / "b.mmdb"))
    assert (config.access_log.enabled, config.access_log.sample) == (True, 0.25)
    assert error_of(write(tmp_path, "access_log: {sample: 2}\n")).path == "access_log.sample"


def test_workers_need_shareable_listeners(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, "workers: 3\n"))).workers == 3
    error = error_of(write(tmp_path, "workers: 2\nlisten: {http: 'unix:/tmp/gw.sock'}\n"))
    assert error.path == "listen.http" and "workers: 1" in error.reason
    defaulted = load_config(str(write(tmp_path, "listen: {http: 'unix:/tmp/gw.sock'}\n")))
    assert defaulted.workers == 1


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("events: {sinks: [{type: jsonl}]}", "events.sinks[0].path", "required"),
        ("events: {sinks: [{type: kafka}]}", "events.sinks[0].type", "expected 'jsonl' or 'http'"),
        ("events: {batch_size: 1000, queue_limit: 500}", "events.queue_limit", "at least"),
        ("proxy: {ca_bundle: /nonexistent.pem}", "proxy.ca_bundle", "cannot read"),
        ("tls: {verification: {resolver: '8.8.8.8'}}", "tls.verification.resolver",
         "expected host:port"),
    ],
)
def test_errors_the_service_would_hit_are_config_errors(tmp_path: Path, text: str, path: str,
                                                        reason: str) -> None:
    error = error_of(write(tmp_path, text))
    assert error.path == path and reason in error.reason


def test_importing_the_twistd_plugin_side_does_not_import_prometheus_client() -> None:
    import subprocess
    import sys

    probe = ("import sys, scarfgw.tap, scarfgw.config; "
             "sys.exit(1 if 'prometheus_client' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).parents[2])
    assert result.returncode == 0, "workers need PROMETHEUS_MULTIPROC_DIR set before the import"


def test_the_files_a_config_names_are_read_once_with_it(tmp_path: Path) -> None:
    """Workers validate the documents the primary read, contents included: they open none of
    the files again (replaced or unreadable by then, they change nothing)."""
    ca = trustme.CA()
    write_tls_pair(ca, tmp_path / "own.pem", tmp_path / "own.key", "own.test")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "companies.txt").write_text("AS64500 Example Corp\n")
    path = write(tmp_path, "proxy: {ca_bundle: ca.pem}\n"
                           "tls:\n  acme: {ca_bundle: ca.pem}\n"
                           "  certificates: [{cert: own.pem, key: own.key}]\n"
                           "events: {geoip: {databases: [geo.mmdb], overrides: companies.txt}}\n")
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    own_pem = (tmp_path / "own.pem").read_bytes()
    documents = pickle.loads(pickle.dumps(read_documents(str(path))))  # as handed to a worker
    for name in ("ca.pem", "own.pem", "own.key", "companies.txt"):
        (tmp_path / name).unlink()
    config = parse_documents(documents)
    assert config.proxy.ca_bundle is not None and config.proxy.ca_bundle.pem == ca_pem
    assert config.tls.acme.ca_bundle == config.proxy.ca_bundle
    [own] = config.tls.certificates
    assert own.chain_pem == own_pem and own.names == frozenset({"own.test"})
    assert config.events.geoip_overrides is not None
    assert config.events.geoip_overrides.company("192.0.2.1", 64500) == "Example Corp"
    with pytest.raises(ConfigError, match=r"proxy\.ca_bundle: cannot read"):
        load_config(str(path))
