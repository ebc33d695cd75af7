"""The real ``npm`` installs through an npm-v1 domain: packuments from a static backend
registry with their tarball URLs pointed at the gateway, tarballs counted and redirected."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from tests.integration.static_backend import StaticBackend, StaticFile, start_static_backend
from tests.support import deferLater, gateway_config, get, start_gateway

NPM = shutil.which("npm")
PACKAGES = {"scarf-demo": "1.2.0", "@scarf-test/helper": "0.3.1"}


def pack(folder: Path, name: str, version: str, dependencies: dict[str, str]) -> Path:
    """``npm pack`` a tiny package whose index.js exports its name and version."""
    source = folder / name.replace("/", "+")
    source.mkdir(parents=True)
    (source / "package.json").write_text(json.dumps(
        {"name": name, "version": version, "main": "index.js", "dependencies": dependencies}))
    (source / "index.js").write_text(f"module.exports = {json.dumps(name + '@' + version)};\n")
    result = subprocess.run([NPM or "npm", "pack", "--pack-destination", str(folder)],
                            cwd=source, capture_output=True, timeout=120, env=npm_env(folder))
    assert result.returncode == 0, result.stderr.decode()
    return folder / result.stdout.decode().split()[-1]


def npm_env(home: Path) -> dict[str, str]:
    """An environment that keeps npm's config, cache and logs under ``home``."""
    return {**os.environ, "HOME": str(home), "npm_config_update_notifier": "false",
            "npm_config_audit": "false", "npm_config_fund": "false",
            "npm_config_cache": str(home / "npm-cache")}


def registry_files(folder: Path, backend: str) -> dict[str, StaticFile]:
    """Packuments (full and abbreviated) and tarballs laid out as an npm registry."""
    files: dict[str, StaticFile] = {}
    dependencies = {"scarf-demo": {"@scarf-test/helper": "^0.3.0"}, "@scarf-test/helper": {}}
    for name, version in PACKAGES.items():
        tarball = pack(folder, name, version, dependencies[name])
        data = tarball.read_bytes()
        base = name.rpartition("/")[2]
        tarball_path = f"/{name}/-/{base}-{version}.tgz"
        files[tarball_path] = StaticFile(data)
        dist = {"tarball": backend + tarball_path, "shasum": hashlib.sha1(data).hexdigest(),
                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()}
        manifest = {"name": name, "version": version, "dependencies": dependencies[name],
                    "dist": dist}
        full = {"name": name, "dist-tags": {"latest": version}, "readme": "# " + name,
                "versions": {version: {**manifest, "description": "a test package"}}}
        abbreviated = {"name": name, "dist-tags": {"latest": version},
                       "versions": {version: manifest}}
        files["/" + name.replace("/", "%2f")] = StaticFile(
            json.dumps(full).encode(), "application/json", json.dumps(abbreviated).encode())
    return files


def npm_rules(backend: str, **extra: Any) -> list[dict[str, Any]]:
    """One rule for scarf-demo, one for the @scarf-test scope, on 127.0.0.1."""
    return [
        {"type": "npm-v1", "domain": "127.0.0.1", "package-id": "demo-id",
         "packages": ["scarf-demo"], "backend-url": backend, **extra},
        {"type": "npm-v1", "domain": "127.0.0.1", "package-id": "scope-id",
         "scopes": ["@scarf-test"], "backend-url": backend + "/", **extra},
    ]


@defer.inlineCallbacks
def start_registry(tmp_path: Path) -> Any:
    """A static backend registry with both packages."""
    backend: StaticBackend = yield start_static_backend()
    backend.site.files.update(registry_files(tmp_path / "packages", backend.url))
    return backend


def run_npm(args: list[str], cwd: Path, home: Path) -> Any:
    return threads.deferToThread(subprocess.run, [NPM or "npm", *args], cwd=cwd,
                                 capture_output=True, timeout=300, env=npm_env(home))


def downloads(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None, int]]:
    return sorted((e["package"], e["name"], e["version"], e["status"])
                  for e in events if e["kind"] == "npm" and e["version"])


@pytest.mark.skipif(NPM is None, reason="npm is installed by scripts/test.sh")
@pytest_twisted.inlineCallbacks
def test_npm_install_and_ci_through_the_gateway(tmp_path: Path) -> Any:
    backend = yield start_registry(tmp_path)
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=npm_rules(backend.url)))
    registry = f"http://127.0.0.1:{gateway.port}/"
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps(
        {"name": "app", "version": "1.0.0", "dependencies": {"scarf-demo": "^1.2.0"}}))
    installed = yield run_npm(["install", "--registry", registry], app, tmp_path / "home1")
    assert installed.returncode == 0, installed.stderr.decode()

    lock = json.loads((app / "package-lock.json").read_text())
    resolved = {path: entry["resolved"] for path, entry in lock["packages"].items() if path}
    assert resolved == {
        "node_modules/scarf-demo": registry + "scarf-demo/-/scarf-demo-1.2.0.tgz",
        "node_modules/@scarf-test/helper": registry + "@scarf-test/helper/-/helper-0.3.1.tgz",
    }
    assert all(entry["integrity"].startswith("sha512-")
               for path, entry in lock["packages"].items() if path)

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(app / "package.json", fresh)
    shutil.copy(app / "package-lock.json", fresh)
    ci = yield run_npm(["ci", "--registry", registry], fresh, tmp_path / "home2")
    yield gateway.stop()
    yield backend.stop()
    assert ci.returncode == 0, ci.stderr.decode()
    for folder in (app, fresh):
        required = subprocess.run(
            ["node", "-e", "console.log(require('scarf-demo'), require('@scarf-test/helper'))"],
            cwd=folder, capture_output=True, timeout=60)
        assert required.stdout.decode().split() == ["scarf-demo@1.2.0", "@scarf-test/helper@0.3.1"]

    events = gateway.events()
    twice = [("demo-id", "scarf-demo", "1.2.0", 307), ("scope-id", "@scarf-test/helper", "0.3.1",
                                                        307)]
    assert downloads(events) == sorted(twice * 2)  # npm install, then npm ci
    pages = {(e["package"], e["name"]) for e in events if e["kind"] == "npm" and not e["version"]}
    assert pages == {("demo-id", "scarf-demo"), ("scope-id", "@scarf-test/helper")}
    assert all(e["target"].startswith(backend.url) for e in events if e["kind"] == "npm"
               and e["version"])


@pytest.mark.skipif(NPM is None, reason="npm is installed by scripts/test.sh")
@pytest_twisted.inlineCallbacks
def test_packuments_are_rewritten_cached_and_revalidated(tmp_path: Path) -> Any:
    backend = yield start_registry(tmp_path)
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=npm_rules(backend.url)))
    port = gateway.port
    full = yield get(port, "/@scarf-test%2fhelper", Host=f"127.0.0.1:{port}")
    abbreviated = yield get(port, "/@scarf-test/helper", Host=f"127.0.0.1:{port}",
                            Accept="application/vnd.npm.install-v1+json; q=1.0, */*")
    again = yield get(port, "/@scarf-test/helper", Host=f"127.0.0.1:{port}",
                      Accept="application/vnd.npm.install-v1+json")
    etag = again.header("etag")
    unchanged = yield get(port, "/@scarf-test/helper", Host=f"127.0.0.1:{port}",
                          Accept="application/vnd.npm.install-v1+json", If_None_Match=etag)
    proxied_host = yield get(port, "/scarf-demo", Host="127.0.0.1",
                             X_Forwarded_Proto="https")
    yield gateway.stop()
    yield backend.stop()

    assert full.status == 200 and full.header("content-type") == "application/json"
    document = json.loads(full.body)
    assert document["readme"] == "# @scarf-test/helper"
    tarball = f"http://127.0.0.1:{port}/@scarf-test/helper/-/helper-0.3.1.tgz"
    assert document["versions"]["0.3.1"]["dist"]["tarball"] == tarball
    original = json.loads(backend.site.files["/@scarf-test%2fhelper"].body)
    assert (document["versions"]["0.3.1"]["dist"]["integrity"]
            == original["versions"]["0.3.1"]["dist"]["integrity"])

    assert abbreviated.header("content-type") == "application/vnd.npm.install-v1+json"
    assert "readme" not in json.loads(abbreviated.body)
    assert again.body == abbreviated.body and again.status == 200
    assert unchanged.status == 304 and unchanged.body == b""
    packument_asks = [r for r in backend.received if r.path == "/@scarf-test%2fhelper"]
    revalidations = [dict((k.lower(), v) for k, v in r.headers).get("if-none-match")
                     for r in packument_asks]
    assert revalidations[0] is None and revalidations[1] is None  # full, then abbreviated
    assert revalidations[2] is not None and revalidations[3] is not None  # cached: 304s

    https_document = json.loads(proxied_host.body)
    assert (https_document["versions"]["1.2.0"]["dist"]["tarball"]
            == "https://127.0.0.1/scarf-demo/-/scarf-demo-1.2.0.tgz")


@pytest.mark.skipif(NPM is None, reason="npm is installed by scripts/test.sh")
@pytest_twisted.inlineCallbacks
def test_tarballs_can_be_proxied(tmp_path: Path) -> Any:
    backend = yield start_registry(tmp_path)
    rules = npm_rules(backend.url, **{"always-proxy": True})
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=rules))
    response = yield get(gateway.port, "/@scarf-test/helper/-/helper-0.3.1.tgz")
    yield gateway.stop()
    yield backend.stop()
    assert response.status == 200
    assert response.body == backend.site.files["/@scarf-test/helper/-/helper-0.3.1.tgz"].body
    assert downloads(gateway.events()) == [("scope-id", "@scarf-test/helper", "0.3.1", 200)]


@pytest_twisted.inlineCallbacks
def test_bad_names_and_bad_backends_get_clear_answers(tmp_path: Path) -> Any:
    silent = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(protocol.Protocol))
    backend: StaticBackend = yield start_static_backend({
        "/not-json": StaticFile(b"<html>oops</html>", "text/html"),
        "/huge": StaticFile(b'{"name":"huge","x":"' + b"a" * 5000 + b'"}', "application/json"),
        "/array": StaticFile(b"[1, 2]", "application/json"),
    })
    rules = [
        {"type": "npm-v1", "domain": "127.0.0.1", "package-id": "p",
         "packages": ["not-json", "huge", "array", "missing"], "scopes": ["@s"],
         "backend-url": backend.url, "max-packument-bytes": 1000},
        {"type": "npm-v1", "domain": "down.test", "package-id": "p", "packages": ["x"],
         "backend-url": "http://127.0.0.2:1"},
        {"type": "npm-v1", "domain": "silent.test", "package-id": "p", "packages": ["x"],
         "backend-url": f"http://127.0.0.1:{silent.getHost().port}"},
    ]
    gateway = yield start_gateway(tmp_path, gateway_config(
        tmp_path, rules=rules, proxy={"response_timeout": 0.5}))
    answers = {}
    for path in ("/not-json", "/huge", "/array", "/missing", "/@s/Bad%20Name",
                 "/other/-/other-1.0.0.tgz", "/@s/ok/-/ok-notaversion.tgz"):
        answers[path] = yield get(gateway.port, path)
    answers["down"] = yield get(gateway.port, "/x", Host="down.test")
    answers["silent"] = yield get(gateway.port, "/x", Host="silent.test")
    yield gateway.stop()
    yield backend.stop()
    yield silent.stopListening()
    statuses = {path: response.status for path, response in answers.items()}
    assert statuses == {"/not-json": 502, "/huge": 502, "/array": 502, "/missing": 404,
                        "/@s/Bad%20Name": 400, "/other/-/other-1.0.0.tgz": 404,
                        "/@s/ok/-/ok-notaversion.tgz": 404, "down": 502, "silent": 504}
    assert json.loads(answers["/huge"].body) == {
        "error": "backend packument larger than 1000 bytes"}
    assert json.loads(answers["/not-json"].body) == {"error": "backend packument is not JSON"}
    assert json.loads(answers["down"].body) == {"error": "backend registry unreachable"}
    assert json.loads(answers["silent"].body) == {
        "error": "backend registry did not answer in time"}
    assert {e["status"] for e in gateway.events()} == {502, 404, 504}


@pytest.mark.skipif(NPM is None, reason="npm is installed by scripts/test.sh")
@pytest_twisted.inlineCallbacks
def test_concurrent_requests_share_one_backend_fetch(tmp_path: Path) -> Any:
    backend = yield start_registry(tmp_path)
    backend.site.delay = 0.3
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=npm_rules(backend.url)))
    answers = yield defer.gatherResults([get(gateway.port, "/scarf-demo") for _ in range(8)])
    yield gateway.stop()
    yield backend.stop()
    assert [answer.status for answer in answers] == [200] * 8
    assert len({answer.body for answer in answers}) == 1
    assert [r.path for r in backend.received] == ["/scarf-demo"]


class _Leaver(protocol.Protocol):
    """Sends a request and hangs up before the answer."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"GET /scarf-demo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reactor.callLater(0.05, self.transport.loseConnection)


@pytest.mark.skipif(NPM is None, reason="npm is installed by scripts/test.sh")
@pytest_twisted.inlineCallbacks
def test_a_client_that_leaves_while_the_backend_answers_is_no_event(tmp_path: Path) -> Any:
    backend = yield start_registry(tmp_path)
    backend.site.delay = 0.3
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=npm_rules(backend.url)))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.port)
    yield endpoint.connect(protocol.Factory.forProtocol(_Leaver))
    yield deferLater(0.1)
    staying = yield get(gateway.port, "/scarf-demo")  # shares the fetch the leaver started
    yield gateway.stop()
    yield backend.stop()
    assert staying.status == 200
    assert [r.path for r in backend.received] == ["/scarf-demo"]
    assert [e["status"] for e in gateway.events()] == [200]
