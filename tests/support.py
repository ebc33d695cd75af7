"""Test helpers: a byte-exact HTTP client, an in-process gateway on loopback, fake upstreams."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import yaml
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.web import resource, server

from scarfgw.config import parse_config
from scarfgw.http.fake import parse_response
from scarfgw.runtime.service import GatewayProcess, primary_service

REPO = Path(__file__).parents[1]
TWISTD = Path(sys.executable).parent / "twistd"


def twistd_env() -> dict[str, str]:
    """Environment for a ``twistd`` subprocess that runs this checkout's scarfgw."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def start_twistd(config: Path, log: Path | None = None, twistd_args: Sequence[str] = (),
                 python_path: Sequence[Path] = (), **popen: Any) -> subprocess.Popen[bytes]:
    """``twistd --pidfile= -n [ARGS] [--logfile LOG] scarfgw --config CONFIG`` in its folder;
    ``python_path`` folders come before the checkout on its (and its workers') PYTHONPATH."""
    args = [str(TWISTD), "--pidfile=", "-n", *twistd_args]
    if log is not None:
        args += ["--logfile", str(log)]
    args += ["scarfgw", "--config", str(config)]
    env = twistd_env()
    env["PYTHONPATH"] = os.pathsep.join([*map(str, python_path), env["PYTHONPATH"]])
    return subprocess.Popen(args, cwd=config.parent, env=env, **popen)


def http_get(url: str, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    """A blocking GET that does not follow redirects: status, headers, body."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def wait_ready(admin: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll the admin ``/readyz`` until it answers 200; fail if ``process`` exits or 15 s pass."""
    for _ in range(300):
        assert process.poll() is None, log.read_text()
        try:
            if http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("gateway never became ready:\n" + log.read_text())


def child_pids(process: subprocess.Popen[bytes]) -> set[int]:
    """The processes ``process`` started that still run (its workers)."""
    path = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    try:
        return {int(pid) for pid in path.read_text().split()}
    except OSError:
        return set()


def poll_until(condition: Any, what: str, log: Path, timeout: float = 15.0) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` (with the log) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen:\n" + log.read_text())
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Collector(protocol.Protocol):
    def __init__(self, request: bytes, done: defer.Deferred[bytes]) -> None:
        self.request = request
        self.done = done
        self.data = bytearray()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(bytes(self.data))


@defer.inlineCallbacks
def raw_request(port: int, method: str, target: str, headers: list[tuple[str, str]],
                body: bytes = b"", host: str = "127.0.0.1") -> Any:
    """Send exactly this request (plus Connection: close and Content-Length if a body)."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    done: defer.Deferred[bytes] = defer.Deferred()
    endpoint = TCP4ClientEndpoint(reactor, host, port)
    yield endpoint.connect(protocol.Factory.forProtocol(lambda: _Collector(payload, done)))
    data = yield done
    return parse_response(data, head_request=method == "HEAD")


@defer.inlineCallbacks
def get(port: int, target: str, **headers: str) -> Any:
    """GET ``target`` with ``headers`` (underscores in names become dashes)."""
    pairs = [(name.replace("_", "-"), value) for name, value in headers.items()]
    if not any(name.lower() == "host" for name, _ in pairs):
        pairs.insert(0, ("Host", "127.0.0.1"))
    response = yield raw_request(port, "GET", target, pairs)
    return response


@dataclass
class RunningGateway:
    """A gateway service listening on loopback, with its JSONL events file."""

    service: GatewayProcess
    events_path: Path
    config_path: Path

    @property
    def port(self) -> int:
        """The HTTP listener's port."""
        return int(self.service.ports["http"].getHost().port)  # type: ignore[attr-defined]

    @property
    def admin_port(self) -> int:
        """The admin listener's port."""
        return int(self.service.ports["admin"].getHost().port)  # type: ignore[attr-defined]

    def events(self) -> list[dict[str, Any]]:
        """Every event written to the JSONL sink so far."""
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line]

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop the service (flushes events)."""
        if self.service.running:
            yield self.service.stopService()


def gateway_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A config dict listening on ephemeral loopback ports with a JSONL sink under tmp_path."""
    config: dict[str, Any] = {
        "listen": {"http": "tcp:0:interface=127.0.0.1", "admin": "tcp:0:interface=127.0.0.1",
                   "insights": None},
        "events": jsonl_events(tmp_path, 0.05),
    }
    config.update(sections)
    return config


def docker_rule(domain: str, registry: str) -> dict[str, Any]:
    """A docker-v1 rule for library/hello on ``domain``, whose registry is ``registry``."""
    return {"type": "docker-v1", "domain": domain, "repository-name": "library/hello",
            "registry": registry, "package-id": "p1"}


def loopback_listeners(http: int, admin: int) -> dict[str, str | None]:
    """A ``listen`` section on fixed loopback ports (for twistd subprocesses)."""
    return {"http": f"tcp:{http}:interface=127.0.0.1", "admin": f"tcp:{admin}:interface=127.0.0.1",
            "insights": None}


def jsonl_events(tmp_path: Path, flush_interval: float) -> dict[str, Any]:
    """An ``events`` section writing to ``tmp_path/events.jsonl``, spooling under tmp_path."""
    return {"flush_interval": flush_interval, "spool_dir": str(tmp_path / "spool"),
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}]}


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as ``tmp_path/scarfgw.yaml`` and return its path."""
    path = tmp_path / "scarfgw.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@defer.inlineCallbacks
def start_gateway(tmp_path: Path, config: dict[str, Any]) -> Any:
    """Write ``config`` to tmp_path, start a gateway from it (in this process: ``workers``
    defaults to 1) and wait until it listens."""
    config.setdefault("workers", 1)
    config_path = write_config(tmp_path, config)
    service = primary_service(parse_config(config, str(config_path)), reactor, str(config_path))
    service.startService()
    for _ in range(200):
        if service.ready:
            break
        yield deferLater(0.01)
    assert service.ready, "gateway did not become ready"
    sink = config["events"]["sinks"][0]
    return RunningGateway(service, Path(sink.get("path", tmp_path / "none")), config_path)


def deferLater(seconds: float) -> defer.Deferred[None]:
    """A Deferred that fires after ``seconds`` on the global reactor."""
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


@dataclass
class RecordedRequest:
    """What a fake upstream received."""

    method: str
    path: str
    query: str | None
    headers: list[tuple[str, str]]


def record_request(request: server.Request) -> RecordedRequest:
    """What ``request`` asked for: method, path, query (None without ``?``), raw headers."""
    path, mark, query = request.uri.decode().partition("?")
    pairs = [(name.decode(), value.decode())
             for name, values in request.requestHeaders.getAllRawHeaders() for value in values]
    return RecordedRequest(request.method.decode(), path, query if mark else None, pairs)


class _FakeUpstream(resource.Resource):
    isLeaf = True

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__()
        self.status = status
        self.headers = headers
        self.body = body
        self.received: list[RecordedRequest] = []

    def render(self, request: server.Request) -> bytes:
        self.received.append(record_request(request))
        request.setResponseCode(self.status)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body


@dataclass
class FakeUpstream:
    """A recording HTTP server on loopback answering one fixed response."""

    resource: _FakeUpstream
    port: Any = field(default=None)

    @property
    def url(self) -> str:
        """Base URL of the fake."""
        return f"http://127.0.0.1:{self.port.getHost().port}"

    @property
    def received(self) -> list[RecordedRequest]:
        """Requests received so far."""
        return self.resource.received


@defer.inlineCallbacks
def start_fake_upstream(status: int = 200, headers: dict[str, str] | None = None,
                        body: bytes = b"") -> Any:
    """Start a :class:`FakeUpstream` on an ephemeral loopback port."""
    fake = _FakeUpstream(status, headers or {}, body)
    site = server.Site(fake)
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return FakeUpstream(fake, port)


def write_tls_pair(ca: trustme.CA, cert: Path, key: Path, *names: str,
                   key_type: trustme.KeyType = trustme.KeyType.ECDSA) -> None:
    """Issue a certificate for ``names`` from ``ca``: its chain (leaf first) to ``cert``,
    its private key to ``key``, both PEM."""
    leaf = ca.issue_cert(*names, key_type=key_type)
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
