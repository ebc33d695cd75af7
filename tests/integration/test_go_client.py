"""The real ``go`` command fetches a module through a go-v1 domain (GOPROXY protocol),
redirected to a module proxy directory served locally; the zip is counted."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.integration.static_backend import StaticBackend, StaticFile, start_static_backend
from tests.support import gateway_config, get, start_gateway

GO = shutil.which("go")
MODULE = "go.example.test/Hello"
ESCAPED = "go.example.test/!hello"
VERSIONS = ("v1.0.0", "v1.1.0")
GO_MOD = f"module {MODULE}\n\ngo 1.19\n"


def module_zip(version: str) -> bytes:
    """A module zip as golang.org/x/mod/zip lays it out: files under ``<module>@<version>/``."""
    source = ("package hello\n\n// Greeting says which version answered.\n"
              f'func Greeting() string {{ return "hello from {version}" }}\n')
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{MODULE}@{version}/go.mod", GO_MOD)
        archive.writestr(f"{MODULE}@{version}/hello.go", source)
    return buffer.getvalue()


def proxy_files() -> dict[str, StaticFile]:
    """A GOPROXY tree for MODULE with two versions."""
    files = {f"/{ESCAPED}/@v/list": StaticFile("\n".join(VERSIONS).encode() + b"\n",
                                                "text/plain")}
    for day, version in enumerate(VERSIONS, start=1):
        info = json.dumps({"Version": version, "Time": f"2024-01-0{day}T00:00:00Z"}).encode()
        files[f"/{ESCAPED}/@v/{version}.info"] = StaticFile(info, "application/json")
        files[f"/{ESCAPED}/@v/{version}.mod"] = StaticFile(GO_MOD.encode(), "text/plain")
        files[f"/{ESCAPED}/@v/{version}.zip"] = StaticFile(module_zip(version), "application/zip")
        files[f"/{ESCAPED}/@latest"] = StaticFile(info, "application/json")
    return files


def go_env(home: Path, proxy: str) -> dict[str, str]:
    """A private GOPATH, module cache and build cache; only the gateway as proxy."""
    return {**os.environ, "HOME": str(home), "GOPATH": str(home / "gopath"),
            "GOMODCACHE": str(home / "modcache"), "GOCACHE": str(home / "gocache"),
            "GOPROXY": proxy, "GOSUMDB": "off", "GOFLAGS": "-mod=mod", "GO111MODULE": "on",
            "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}


def go_rule(backend: str, **extra: Any) -> dict[str, Any]:
    return {"type": "go-v1", "domain": "127.0.0.1", "package-id": "go-id",
            "module-path": "go.example.test", "backend-url": backend, **extra}


@pytest.mark.skipif(GO is None, reason="golang-go is installed by scripts/test.sh")
@pytest_twisted.inlineCallbacks
def test_go_gets_and_builds_a_module_through_the_gateway(tmp_path: Path) -> Any:
    backend: StaticBackend = yield start_static_backend(proxy_files())
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=[go_rule(backend.url)]))
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").write_text("module example.test/app\n\ngo 1.19\n")
    (app / "main.go").write_text(
        f'package main\n\nimport (\n\t"fmt"\n\n\thello "{MODULE}"\n)\n\n'
        "func main() { fmt.Println(hello.Greeting()) }\n")
    env = go_env(tmp_path / "home", f"http://127.0.0.1:{gateway.port}")
    fetched = yield threads.deferToThread(
        subprocess.run, [GO or "go", "get", f"{MODULE}@latest"], cwd=app, env=env,
        capture_output=True, timeout=300)
    assert fetched.returncode == 0, fetched.stderr.decode()
    ran = yield threads.deferToThread(
        subprocess.run, [GO or "go", "run", "."], cwd=app, env=env, capture_output=True,
        timeout=300)
    yield gateway.stop()
    yield backend.stop()
    assert ran.returncode == 0, ran.stderr.decode()
    assert ran.stdout.decode() == "hello from v1.1.0\n"
    assert f"{MODULE} v1.1.0" in (app / "go.mod").read_text()

    events = [e for e in gateway.events() if e["kind"] == "go"]
    assert all(e["package"] == "go-id" and e["status"] == 307 for e in events)
    # go also asks whether the path's prefix is a module (the backend has none: 404)
    assert {e["module"] for e in events} == {MODULE, "go.example.test"}
    events = [e for e in events if e["module"] == MODULE]
    files = {(e["file"], e["version"]) for e in events}
    assert ("zip", "v1.1.0") in files and ("mod", "v1.1.0") in files
    assert files & {("list", None), ("latest", None)}
    assert [e["version"] for e in events if e["file"] == "zip"] == ["v1.1.0"]


@pytest_twisted.inlineCallbacks
def test_proxied_and_malformed_goproxy_requests(tmp_path: Path) -> Any:
    backend: StaticBackend = yield start_static_backend(proxy_files())
    rules = [go_rule(backend.url, **{"always-proxy": True})]
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=rules))
    port = gateway.port
    zipped = yield get(port, f"/{ESCAPED}/@v/v1.0.0.zip")
    listed = yield get(port, f"/{ESCAPED}/@v/list")
    upper = yield get(port, f"/{MODULE}/@v/list")
    bad_version = yield get(port, f"/{ESCAPED}/@v/v1.0.0%00.info")
    elsewhere = yield get(port, "/other.test/mod/@v/list")
    scraped = yield get(gateway.admin_port, "/metrics")
    yield gateway.stop()
    yield backend.stop()
    assert zipped.status == 200 and zipped.body == module_zip("v1.0.0")
    assert listed.status == 200 and listed.body == b"v1.0.0\nv1.1.0\n"
    assert (upper.status, bad_version.status, elsewhere.status) == (400, 400, 404)
    assert 'scarfgw_http_requests_total{code="200",kind="go",method="GET"}' in (
        scraped.body.decode())
    events = gateway.events()
    assert [(e["file"], e["version"], e["status"]) for e in events] == [
        ("zip", "v1.0.0", 200), ("list", None, 200)]
