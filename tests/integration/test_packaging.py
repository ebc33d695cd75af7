"""The user's install paths: ``python -m build`` makes an sdist and a compiled wheel; each
installs into a fresh venv (build isolation), and ``twistd -n scarfgw`` then serves the
shipped example config. Without a C compiler the sdist installs as plain Python, with one
warning, and so does one whose C compilation fails. Takes about three minutes (three builds;
pip's cache serves the dependencies)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, free_port, http_get, wait_ready

EXAMPLE_HTTP = '"tcp:8080"'
EXAMPLE_ADMIN = '"tcp:9180:interface=127.0.0.1"'
EXAMPLE_INSIGHTS = '"tcp:9190:interface=127.0.0.1"'


# A user's environment: no SCARFGW_PURE (``SCARFGW_PURE=1 make test`` sets it for the suite).
USER_ENV = {name: value for name, value in os.environ.items() if name != "SCARFGW_PURE"}


def _run(*args: str | Path, env: dict[str, str] | None = None, **kwargs: object
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                          env={**USER_ENV, **(env or {})}, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel ``python -m build`` makes from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    built = _run(sys.executable, "-m", "build", "--outdir", out, REPO)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


def _fresh_venv(folder: Path) -> Path:
    """A new venv under ``folder``; returns its bin directory."""
    made = _run(sys.executable, "-m", "venv", folder / "venv")
    assert made.returncode == 0, made.stderr
    return folder / "venv" / "bin"


def _install(bin_dir: Path, artifact: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    installed = _run(bin_dir / "pip", "install", "-v", artifact, env=env)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return installed


def _serve_example(bin_dir: Path, folder: Path) -> None:
    """``scarfgw example-config`` (ports moved to free ones) run by ``twistd -n scarfgw``:
    a docker client gets a 307 and ``/readyz`` answers 200."""
    example = _run(bin_dir / "scarfgw", "example-config")
    assert example.returncode == 0, example.stderr
    http, admin, insights = free_port(), free_port(), free_port()
    assert all(port in example.stdout for port in (EXAMPLE_HTTP, EXAMPLE_ADMIN, EXAMPLE_INSIGHTS))
    config = folder / "scarfgw.yaml"
    config.write_text(example.stdout
                      .replace(EXAMPLE_HTTP, f'"tcp:{http}:interface=127.0.0.1"')
                      .replace(EXAMPLE_ADMIN, f'"tcp:{admin}:interface=127.0.0.1"')
                      .replace(EXAMPLE_INSIGHTS, f'"tcp:{insights}:interface=127.0.0.1"'))
    log = folder / "twistd.log"
    process = subprocess.Popen([bin_dir / "twistd", "--pidfile=", "-n", "--logfile", log,
                                "scarfgw", "--config", config], cwd=folder, env=USER_ENV)
    try:
        wait_ready(admin, process, log)
        status, headers, _ = http_get(
            f"http://127.0.0.1:{http}/v2/library/hello/manifests/latest",
            {"Host": "cr.example.test", "User-Agent": "docker/27.0"})
        assert status == 307
        assert headers["Location"] == (
            "https://registry-1.docker.io/v2/library/hello/manifests/latest")
        assert http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 200
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()
    [event] = [json.loads(line) for line in (folder / "var" / "events.jsonl").open()]
    assert (event["image"], event["status"], event["pull"]) == ("library/hello", 307, True)


def test_wheel_is_compiled_and_serves_the_shipped_example(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("scarfgw-*.whl")
    assert "-cp3" in wheel.name and "linux" in wheel.name, "a platform wheel: compiled"
    bin_dir = _fresh_venv(tmp_path)
    _install(bin_dir, wheel)
    version = _run(bin_dir / "scarfgw", "--version")
    assert version.stdout.strip() == "scarfgw 0.1.0 (compiled with mypyc)"
    unit = _run(bin_dir / "scarfgw", "example-config", "systemd").stdout
    assert "ExecStart=/opt/scarfgw/bin/twistd" in unit
    assert "/var/lib/scarfgw/events.jsonl" in _run(
        bin_dir / "scarfgw", "example-config", "logrotate").stdout
    no_config = _run(bin_dir / "twistd", "-n", "scarfgw", cwd=tmp_path)
    assert no_config.returncode != 0
    assert no_config.stdout.splitlines()[-1].endswith(
        ": no config file: run `twistd scarfgw --config FILE` "
        "(`scarfgw example-config > scarfgw.yaml` writes an example to start from)")
    usage = _run(bin_dir / "twistd", "scarfgw", "--help").stdout
    assert usage.startswith("Usage: twistd [options] scarfgw --config FILE\n")
    _serve_example(bin_dir, tmp_path)


def test_sdist_without_a_compiler_installs_plain_python(dist: Path, tmp_path: Path) -> None:
    [sdist] = dist.glob("scarfgw-*.tar.gz")
    bin_dir = _fresh_venv(tmp_path)
    installed = _install(bin_dir, sdist, env={"CC": "/nonexistent/cc"})
    output = installed.stdout + installed.stderr
    assert output.count("warning: scarfgw is installed as plain Python") == 1, output[-3000:]
    assert "no C compiler (/nonexistent/cc)" in output
    version = _run(bin_dir / "scarfgw", "--version")
    assert version.stdout.strip() == "scarfgw 0.1.0 (pure Python)"
    _serve_example(bin_dir, tmp_path)


def test_sdist_whose_compilation_fails_installs_plain_python(dist: Path, tmp_path: Path
                                                               ) -> None:
    [sdist] = dist.glob("scarfgw-*.tar.gz")
    bin_dir = _fresh_venv(tmp_path)
    broken_compiler = "gcc -include /nonexistent/missing.h"
    installed = _run(bin_dir / "pip", "install", "-v", "--no-deps", sdist,
                     env={"CC": broken_compiler})
    output = installed.stdout + installed.stderr
    assert installed.returncode == 0, output[-3000:]
    assert output.count("warning: scarfgw is installed as plain Python") == 1, output[-3000:]
    assert "the C compiler failed" in output
    router = _run(bin_dir / "python", "-c", "import scarfgw.rules.router as r; print(r.__file__)",
                  cwd=tmp_path)
    assert router.stdout.strip().endswith("scarfgw/rules/router.py"), router.stderr
