"""The real ``apt-get`` updates from and downloads out of a signed apt repository through
file-v1 rules (the README recipe), with a private configuration that never touches the
system's apt state; each ``.deb`` is counted with its package and version."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.integration.static_backend import StaticBackend, directory_files, start_static_backend
from tests.support import gateway_config, start_gateway

TOOLS = ("apt-get", "dpkg-deb", "dpkg-scanpackages", "apt-ftparchive", "gpg")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
DEB = "pool/main/s/scarf-hello/scarf-hello_1.0-1_all.deb"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> bytes:
    """Run a repository-building command; its stdout."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, timeout=120, env=env)
    assert result.returncode == 0, (args, result.stderr.decode())
    return result.stdout


def build_repository(tmp_path: Path) -> tuple[Path, Path]:
    """A one-package repository (dists/stable/main, pool/), signed by a fresh key: the
    repository root and the key ring apt trusts for it."""
    package = tmp_path / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "usr/share/scarf-hello").mkdir(parents=True)
    (package / "usr/share/scarf-hello/greeting").write_text("hello through the gateway\n")
    (package / "DEBIAN/control").write_text(
        "Package: scarf-hello\nVersion: 1.0-1\nArchitecture: all\n"
        "Maintainer: scarfgw tests <tests@example.test>\nDescription: a test package\n")
    repo = tmp_path / "repo"
    (repo / DEB).parent.mkdir(parents=True)
    run(["dpkg-deb", "--root-owner-group", "--build", str(package), str(repo / DEB)], tmp_path)
    for arch in ("amd64", "all"):
        folder = repo / "dists/stable/main" / f"binary-{arch}"
        folder.mkdir(parents=True)
        (folder / "Packages").write_bytes(
            run(["dpkg-scanpackages", "--multiversion", "pool", "/dev/null"], repo))
        run(["gzip", "-k9", str(folder / "Packages")], repo)
    release = run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=stable",
                   "-o", "APT::FTPArchive::Release::Codename=stable",
                   "-o", "APT::FTPArchive::Release::Components=main",
                   "-o", "APT::FTPArchive::Release::Architectures=amd64 all",
                   "release", "dists/stable"], repo)
    (repo / "dists/stable/Release").write_bytes(release)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
         "scarfgw tests <tests@example.test>", "ed25519", "sign", "never"], tmp_path, env)
    stable = repo / "dists/stable"
    run(["gpg", "--batch", "--yes", "--clearsign", "-o", "InRelease", "Release"], stable, env)
    run(["gpg", "--batch", "--yes", "-abs", "-o", "Release.gpg", "Release"], stable, env)
    keyring = tmp_path / "repo-key.gpg"
    keyring.write_bytes(run(["gpg", "--export"], tmp_path, env))
    return repo, keyring


def apt_rules(backend: str) -> list[dict[str, Any]]:
    """The README recipe: packages counted per .deb, repository metadata under its own id."""
    deb = "/pool/{component}/{prefix}/{source}/{package}_{version}_{arch}.deb"
    return [
        {"type": "file-v1", "domain": "127.0.0.1", "package-id": "apt-debs",
         "incoming-path": "/apt" + deb, "outgoing-url": backend + deb},
        {"type": "file-v1", "domain": "127.0.0.1", "package-id": "apt-metadata",
         "incoming-path": "/apt/dists/{+path}", "outgoing-url": backend + "/dists/{+path}"},
    ]


def apt_get(state: Path, *args: str) -> list[str]:
    """``apt-get`` with sources, state, cache and trust all under ``state``."""
    options = {
        "Dir::Etc::sourcelist": state / "sources.list", "Dir::Etc::sourceparts": state / "empty",
        "Dir::Etc::trustedparts": state / "empty", "Dir::State": state / "lib",
        "Dir::State::status": state / "status", "Dir::Cache": state / "cache",
        "Dir::Log": state / "log", "Debug::NoLocking": "1", "APT::Sandbox::User": "root",
        "APT::Architecture": "amd64", "APT::Architectures": "amd64",
        "Acquire::Languages": "none",
    }
    return ["apt-get", "-q", *(f"-o{name}={value}" for name, value in options.items()), *args]


@pytest.mark.skipif(bool(MISSING), reason=f"scripts/test.sh installs {MISSING}")
@pytest_twisted.inlineCallbacks
def test_apt_get_updates_and_downloads_through_the_gateway(tmp_path: Path) -> Any:
    repo, keyring = build_repository(tmp_path)
    backend: StaticBackend = yield start_static_backend(directory_files(repo))
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=apt_rules(backend.url)))
    state = tmp_path / "apt"
    for folder in ("empty", "lib/lists/partial", "cache/archives/partial", "log", "download"):
        (state / folder).mkdir(parents=True)
    (state / "status").write_text("")
    (state / "sources.list").write_text(
        f"deb [signed-by={keyring}] http://127.0.0.1:{gateway.port}/apt stable main\n")
    updated = yield threads.deferToThread(
        subprocess.run, apt_get(state, "update"), capture_output=True, timeout=120)
    downloaded = yield threads.deferToThread(
        subprocess.run, apt_get(state, "download", "scarf-hello"), cwd=state / "download",
        capture_output=True, timeout=120)
    yield gateway.stop()
    yield backend.stop()
    assert updated.returncode == 0, updated.stderr.decode()
    assert b"W:" not in updated.stderr and b"E:" not in updated.stderr, updated.stderr.decode()
    assert downloaded.returncode == 0, downloaded.stderr.decode()
    fetched = state / "download/scarf-hello_1.0-1_all.deb"
    assert fetched.read_bytes() == (repo / DEB).read_bytes()

    events = gateway.events()
    [deb] = [e for e in events if e["package"] == "apt-debs"]
    assert deb["status"] == 307
    assert deb["variables"] == {"component": "main", "prefix": "s", "source": "scarf-hello",
                                "package": "scarf-hello", "version": "1.0-1", "arch": "all"}
    assert deb["target"] == backend.url + "/" + DEB
    metadata = [e["variables"]["path"] for e in events if e["package"] == "apt-metadata"]
    assert metadata == ["stable/InRelease"]
    # apt takes the InRelease redirect as the repository's new base for the index files of
    # this update; every .deb is asked from the gateway again
    served = [r.path for r in backend.received]
    assert "/dists/stable/main/binary-amd64/Packages.gz" in served
    assert served[-1] == "/" + DEB
