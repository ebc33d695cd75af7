"""The Dockerfile, built and run by a private dockerd: the compiled image starts as the user
scarfgw, its HEALTHCHECK reports healthy from ``/readyz``, a real ``docker pull`` through
the container is redirected to a local docker-registry (the event lands in the data
volume), and ``docker stop`` ends it cleanly.

There is no Docker Hub here, so the test makes the base image itself: a debootstrapped
Debian bookworm (minbase, from Debian's mirror; the tarball is cached in
``$SCARFGW_TEST_CACHE``, default ``~/.cache/scarfgw-tests``) that also trusts this
machine's CA bundle (PyPI may be reached through a TLS-inspecting proxy), passed as
``--build-arg BASE``. About 4 minutes (the compiled build), plus 1 minute for debootstrap
on the first run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import yaml

from tests.integration.container_engines import DOCKER_CLI, dockerd
from tests.integration.registry_image import write_oci_layout
from tests.integration.registry_servers import registry, require, skopeo
from tests.support import REPO, free_port, http_get, write_tls_pair

CACHE = Path(os.environ.get("SCARFGW_TEST_CACHE", Path.home() / ".cache" / "scarfgw-tests"))
MIRROR = os.environ.get("SCARFGW_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE = "scarfgw-test:latest"


def _run(command: list[str], env: dict[str, str], timeout: float = 900,
         **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, env=env,
                            timeout=timeout, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def _bookworm_rootfs() -> Path:
    """A minbase Debian bookworm root file system as a tarball, made once and cached."""
    tarball = CACHE / "debian-bookworm-minbase.tar"
    if tarball.exists():
        return tarball
    require("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE / "rootfs.partial"
    shutil.rmtree(rootfs, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), MIRROR],
                   check=True, capture_output=True, timeout=900)
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True,
                   timeout=300)
    partial.rename(tarball)
    shutil.rmtree(rootfs)
    return tarball


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private dockerd holding the base image and the gateway image built from REPO."""
    tarball = _bookworm_rootfs()
    with dockerd(tmp_path_factory.mktemp("dockerd")) as env:
        _run([DOCKER_CLI, "import", str(tarball), "scarfgw-test-base:rootfs"], env)
        context = tmp_path_factory.mktemp("base")
        shutil.copy(HOST_CA, context / "host-ca.crt")
        (context / "Dockerfile").write_text(
            "FROM scarfgw-test-base:rootfs\n"
            "COPY host-ca.crt /usr/local/share/ca-certificates/host-ca.crt\n"
            "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt\n")
        _run([DOCKER_CLI, "build", "-t", "scarfgw-test-base:bookworm", str(context)], env)
        started = time.monotonic()
        _run([DOCKER_CLI, "build", "--network", "host", "--build-arg",
              "BASE=scarfgw-test-base:bookworm", "-t", IMAGE, str(REPO)], env)
        print(f"docker build: {time.monotonic() - started:.0f} s")
        yield env


def test_the_image_runs_unprivileged_healthy_and_redirects_a_docker_pull(
        docker_env: dict[str, str], tmp_path: Path) -> None:
    require("docker-registry", "skopeo")
    inspected = json.loads(_run([DOCKER_CLI, "image", "inspect", IMAGE], docker_env).stdout)
    config = inspected[0]["Config"]
    assert config["User"] == "scarfgw"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8443/tcp"}
    assert set(config["Volumes"]) == {"/var/lib/scarfgw"}
    assert config["Entrypoint"][:2] == ["/opt/scarfgw/bin/twistd", "--nodaemon"]
    assert config["Entrypoint"][-1] == "scarfgw"
    assert config["Cmd"] == ["--config", "/etc/scarfgw/scarfgw.yaml"]
    assert "SCARFGW_READYZ_URL" in config["Healthcheck"]["Test"][-1]

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_tls_pair(trustme.CA(), cert, key, "127.0.0.1")
    hello = write_oci_layout(tmp_path / "image", content=b"from the container test\n")
    with registry(tmp_path / "registry", tls=(cert, key)) as backend:
        pushed = skopeo("copy", "--dest-tls-verify=false", f"oci:{hello.layout}:latest",
                        f"docker://{backend.host}/library/hello:latest")
        assert pushed.returncode == 0, pushed.stderr[-2000:]
        http, admin, insights = free_port(), free_port(), free_port()
        config_path, data = tmp_path / "scarfgw.yaml", tmp_path / "data"
        config_path.write_text(yaml.safe_dump({
            "listen": {"http": f"tcp:{http}:interface=127.0.0.1",
                       "admin": f"tcp:{admin}:interface=127.0.0.1",
                       "insights": f"tcp:{insights}:interface=127.0.0.1"},
            "rules": [{"type": "docker-v1", "domain": "127.0.0.1",
                       "repository-name": "library/hello", "registry": backend.host,
                       "package-id": "hello"}],
            "events": {"flush_interval": 0.1, "spool_dir": "/var/lib/scarfgw/spool",
                       "sinks": [{"type": "jsonl", "path": "/var/lib/scarfgw/events.jsonl"}]},
            "insights": {"duckdb": {"path": "/var/lib/scarfgw/insights.duckdb"}},
        }))
        data.mkdir()
        data.chmod(0o777)
        name = f"scarfgw-test-{os.getpid()}"
        _run([DOCKER_CLI, "run", "-d", "--name", name, "--network", "host",
              "-v", f"{config_path}:/etc/scarfgw/scarfgw.yaml:ro",
              "-v", f"{data}:/var/lib/scarfgw",
              "-e", f"SCARFGW_READYZ_URL=http://127.0.0.1:{admin}/readyz",
              "--health-interval", "1s", "--health-start-period", "1s", IMAGE], docker_env)
        try:
            _wait_healthy(name, docker_env)
            assert http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 200
            pulled = _run([DOCKER_CLI, "pull", f"127.0.0.1:{http}/library/hello:latest"],
                          docker_env)
            assert f"Digest: {hello.manifest_digest}" in pulled.stdout
            _run([DOCKER_CLI, "stop", "-t", "30", name], docker_env)
            state = json.loads(_run([DOCKER_CLI, "inspect", name], docker_env).stdout)[0]
            assert state["State"]["ExitCode"] == 0, _logs(name, docker_env)
            owner = _run([DOCKER_CLI, "run", "--rm", "--entrypoint", "id", IMAGE, "-un"],
                         docker_env).stdout.strip()
            assert owner == "scarfgw"
        finally:
            subprocess.run([DOCKER_CLI, "rm", "-f", name], capture_output=True, env=docker_env)
    events = [json.loads(line) for line in (data / "events.jsonl").open()]
    manifests = [e for e in events if e["pull"]]
    assert manifests and {(e["status"], e["client"]["runtime"], e["image"])
                          for e in manifests} == {(307, "docker", "library/hello")}
    assert {e["backend"] for e in events} == {backend.host}


def _logs(name: str, env: dict[str, str]) -> str:
    result = subprocess.run([DOCKER_CLI, "logs", name], capture_output=True, text=True, env=env)
    return result.stdout[-3000:] + result.stderr[-3000:]


def _wait_healthy(name: str, env: dict[str, str]) -> None:
    """Wait until the image's HEALTHCHECK reports healthy (at most 60 s)."""
    status = ""
    for _ in range(120):
        status = _run([DOCKER_CLI, "inspect", "--format", "{{.State.Health.Status}}", name],
                      env).stdout.strip()
        if status == "healthy":
            return
        time.sleep(0.5)
    raise AssertionError(f"container is {status}:\n{_logs(name, env)}")
