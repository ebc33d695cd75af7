"""Real clients through the gateway: pip installs two real wheels from its python index,
curl follows file-v1 redirects to a static backend on another loopback address."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.support import free_port, gateway_config, start_gateway

WHEELS = {"six": "six-1.16.0-py2.py3-none-any.whl", "idna": "idna-3.4-py3-none-any.whl"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two real wheels, downloaded once from the package index."""
    folder = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--disable-pip-version-check",
         "--no-deps", "--only-binary=:all:", "six==1.16.0", "idna==3.4", "-d", str(folder)],
        capture_output=True, timeout=120,
    )
    if result.returncode != 0:
        pytest.skip("cannot download the test wheels: " + result.stderr.decode()[-300:])
    return folder


@pytest.fixture(scope="module")
def static_backend(wheels: Path) -> Iterator[str]:
    """A plain static file server on 127.0.0.2 serving the wheels under /files/."""
    root = wheels.parent / "backend"
    (root / "files").mkdir(parents=True, exist_ok=True)
    for wheel in wheels.iterdir():
        shutil.copy(wheel, root / "files" / wheel.name)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.2"], cwd=root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    yield f"http://127.0.0.2:{port}"
    server.terminate()
    server.wait()


def python_rules(wheels: Path, backend: str) -> list[dict[str, Any]]:
    """One python-v1 rule per wheel on the domain 127.0.0.1, with its sha256."""
    rules = []
    for project, filename in WHEELS.items():
        digest = hashlib.sha256((wheels / filename).read_bytes()).hexdigest()
        rules.append({
            "type": "python-v1", "domain": "127.0.0.1", "package-name": project,
            "file-name": filename, "version": filename.split("-")[1],
            "backend-url": f"{backend}/files/{filename}",
            "hash-value": {"type": "sha256", "hash": digest}, "package-id": f"id-{project}",
        })
    return rules


@pytest_twisted.inlineCallbacks
def test_pip_installs_two_wheels_through_the_gateway(
    tmp_path: Path, wheels: Path, static_backend: str
) -> Any:
    config = gateway_config(tmp_path, rules=python_rules(wheels, static_backend))
    gateway = yield start_gateway(tmp_path, config)
    target = tmp_path / "installed"
    command = [
        sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
        "--no-cache-dir", "--index-url", f"http://127.0.0.1:{gateway.port}/simple/",
        "--target", str(target), "six", "idna",
    ]
    result = yield threads.deferToThread(
        subprocess.run, command, capture_output=True, timeout=120)
    yield gateway.stop()
    assert result.returncode == 0, result.stderr.decode()
    assert (target / "six.py").exists() and (target / "idna" / "__init__.py").exists()
    downloads = [e for e in gateway.events() if e["kind"] == "python" and e["file"]]
    assert sorted(e["file"] for e in downloads) == sorted(WHEELS.values())
    assert all(e["status"] == 307 for e in downloads)
    pages = [e for e in gateway.events() if e["kind"] == "python" and not e["file"]]
    assert sorted(e["package"] for e in pages) == ["id-idna", "id-six"]


@pytest_twisted.inlineCallbacks
def test_curl_follows_file_redirects(tmp_path: Path, wheels: Path, static_backend: str) -> Any:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    rule = {"type": "file-v1", "domain": "get.example.test",
            "incoming-path": "/dl/{project}/{file}",
            "outgoing-url": static_backend + "/files/{file}", "package-id": "files"}
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=[rule]))
    out = tmp_path / "six.whl"
    url = f"http://127.0.0.1:{gateway.port}/dl/six/{WHEELS['six']}?source=readme"
    result = yield threads.deferToThread(
        subprocess.run,
        ["curl", "-sSfL", "-H", "Host: get.example.test", "-o", str(out), "-w",
         "%{num_redirects} %{url_effective}", url],
        capture_output=True, timeout=60,
    )
    yield gateway.stop()
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (wheels / WHEELS["six"]).read_bytes()
    redirects, effective = result.stdout.decode().split()
    assert redirects == "1"
    assert effective == f"{static_backend}/files/{WHEELS['six']}?source=readme"
    [event] = gateway.events()
    assert event["variables"] == {"project": "six", "file": WHEELS["six"]}
    assert event["target"] == effective
