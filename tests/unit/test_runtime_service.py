"""The process wiring with a memory reactor: listeners, readiness, reload through the config
file (applied whole, or refused whole), the stop order, one-line bind failures, and the
orphaned spools found for replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from scarfgw.config import load_config
from scarfgw.http.fake import FakeConnection
from scarfgw.runtime.listeners import CannotListen
from scarfgw.runtime.service import primary_service
from scarfgw.runtime.spools import orphaned_spools

RULE = {"type": "docker-v1", "domain": "cr.example.test", "repository-name": "library/one",
        "registry": "registry.example.test", "package-id": "p1"}
DOCKER = [(b"Host", b"cr.example.test"), (b"User-Agent", b"docker/27.0")]


def write(tmp_path: Path, **document: Any) -> Path:
    path = tmp_path / "scarfgw.yaml"
    document = {"workers": 1,
                "listen": {"http": "tcp:8080", "admin": "tcp:9180", "insights": None},
                "rules": [RULE], "events": {"sinks": [{"type": "jsonl", "path": "e.jsonl"}]},
                **document}
    path.write_text(yaml.safe_dump(document))
    return path


def status_of(process: Any, reactor: Any, target: bytes) -> int:
    connection = FakeConnection(reactor)
    process.gateway.handle(connection.request(b"GET", target, DOCKER))
    return int(connection.response().status)


def test_the_primary_binds_reports_ready_and_stops_in_order(tmp_path):
    reactor = MemoryReactorClock()
    process = primary_service(load_config(str(write(tmp_path))), reactor)
    process.privilegedStartService()
    process.startService()
    assert sorted(process.ports) == ["admin", "http"]
    assert [port for port, *_ in reactor.tcpServers] == [9180, 8080]
    assert process.ready
    closed: list[str] = []
    for name, port in process.ports.items():
        cast(Any, port).stopListening = lambda name=name: closed.append(name)
    stopped = process.stopService()
    assert not process.is_ready()
    assert process.gateway.draining
    reactor.advance(1)
    assert stopped.called
    assert closed == ["http", "admin"], "the admin listener (/readyz 503) closes last"


def test_relative_paths_start_at_the_config_folder(tmp_path):
    config = load_config(str(write(tmp_path)))
    assert config.events.sinks[0]["path"] == str(tmp_path / "e.jsonl")
    assert config.events.spool_dir == str(tmp_path / "var" / "spool")
    assert config.tls.storage == str(tmp_path / "var" / "tls")


def test_a_reload_swaps_the_whole_snapshot_or_nothing(tmp_path):
    reactor = MemoryReactorClock()
    path = write(tmp_path)
    process = primary_service(load_config(str(path)), reactor)
    first = process.snapshot
    assert status_of(process, reactor, b"/v2/library/two/manifests/1") == 404
    write(tmp_path, rules=[RULE, dict(RULE, **{"repository-name": "library/two"})],
          trusted_proxies=["10.0.0.0/8"])
    assert process.config_file is not None and process.config_file.reload()
    second = process.snapshot
    assert second.generation == 2 and second.router is not first.router
    assert second.forwarder is first.forwarder, "same proxy settings: same pooled proxy"
    assert status_of(process, reactor, b"/v2/library/two/manifests/1") == 307
    path.write_text("rules: [{type: docker-v1, domain: x}]\n")
    assert not process.config_file.reload()
    assert process.snapshot is second


def test_a_listener_that_cannot_bind_stops_the_process_with_one_line(tmp_path):
    class Taken(MemoryReactorClock):
        def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                      interface: str = "") -> Any:
            if port == 8080:
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))
            return super().listenTCP(port, factory, backlog, interface)

    process = primary_service(load_config(str(write(tmp_path))), Taken())
    with pytest.raises(CannotListen) as caught:
        process.privilegedStartService()
    assert caught.value.code == (
        "scarfgw: cannot listen for http on 'tcp:8080': Address already in use")


def test_only_spools_of_workers_that_are_gone_are_orphaned(tmp_path):
    for name in ("worker-1", "worker-2", "worker-3", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "jsonl.0000000000000000.spool").write_bytes(b"{}\n")
    (tmp_path / "worker-4").mkdir()
    assert orphaned_spools(str(tmp_path), 2) == [tmp_path / "worker-2", tmp_path / "worker-3"]
    assert orphaned_spools(str(tmp_path / "missing"), 1) == []
