"""Real container engines for the tests, each under its own temp folder: dockerd (Debian's
docker.io, no iptables, overlay2), containerd (``ctr``), podman; and test names in /etc/hosts.

Nothing here touches the machine's own engines: every socket, data root and state folder
lives under the folder given; /etc/docker/key.json, which dockerd 20.10 writes, is removed
again when it did not exist before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.integration.registry_servers import require

HOSTS = Path("/etc/hosts")
HOSTS_LOCK = Path("/etc/hosts.lock")
HOSTS_TAG = "# scarfgw tests (packaging branch)"
DOCKER_CLI = "/usr/bin/docker"  # Debian's CLI, matching the daemon (/usr/local/bin may differ)
DOCKER_KEY = Path("/etc/docker/key.json")


@contextlib.contextmanager
def _hosts_locked() -> Iterator[None]:
    with HOSTS_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def loopback_names(names: Sequence[str]) -> Iterator[None]:
    """Resolve ``names`` to 127.0.0.1 through /etc/hosts (our own tagged line) for the block."""
    line = f"127.0.0.1 {' '.join(names)} {HOSTS_TAG} {os.getpid()}\n"
    with _hosts_locked(), HOSTS.open("a") as hosts:
        hosts.write(line)
    try:
        yield
    finally:
        with _hosts_locked():
            kept = [entry for entry in HOSTS.read_text().splitlines(keepends=True)
                    if entry != line]
            HOSTS.write_text("".join(kept))


def _wait_for(check: list[str], process: subprocess.Popen[bytes], log: Path,
              env: dict[str, str] | None = None) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"{check[0]}: the daemon exited:\n{log.read_text()[-3000:]}")
        if subprocess.run(check, capture_output=True, env=env).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{check[0]}: the daemon did not answer:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def dockerd(folder: Path) -> Iterator[dict[str, str]]:
    """A private dockerd; yields the environment for ``docker`` (``DOCKER_HOST``, and
    ``DOCKER_CONFIG`` so logins stay in ``folder``). Loopback registries count as insecure:
    dockerd pulls from them over HTTPS without checking certificates, or over HTTP."""
    require("dockerd", DOCKER_CLI)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "daemon.json").write_text("{}")
    (folder / "client").mkdir(exist_ok=True)
    had_key = DOCKER_KEY.exists()
    socket = folder / "docker.sock"
    log = folder / "dockerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["dockerd", "--config-file", str(folder / "daemon.json"),
             "--pidfile", str(folder / "dockerd.pid"), "--storage-driver=overlay2",
             "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
             "--data-root", str(folder / "data"), "--exec-root", str(folder / "exec"),
             "-H", f"unix://{socket}"], stdout=out, stderr=subprocess.STDOUT)
    env = {**os.environ, "DOCKER_HOST": f"unix://{socket}",
           "DOCKER_CONFIG": str(folder / "client")}
    try:
        _wait_for([DOCKER_CLI, "version"], process, log, env)
        yield env
    finally:
        _stop(process)
        _unmount_under(folder)
        if not had_key:
            DOCKER_KEY.unlink(missing_ok=True)


def _unmount_under(folder: Path) -> None:
    """Unmount what a daemon left mounted under ``folder`` (dockerd's netns/default)."""
    prefix = f"{folder}/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


@contextlib.contextmanager
def containerd(folder: Path) -> Iterator[list[str]]:
    """A private containerd; yields the ``ctr`` command prefix that talks to it."""
    require("containerd", "ctr")
    folder.mkdir(parents=True, exist_ok=True)
    socket = folder / "containerd.sock"
    config = folder / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{folder}/root"\nstate = "{folder}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{folder}/ttrpc.sock"\n'
        f'[debug]\n  address = "{folder}/debug.sock"\n')
    log = folder / "containerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["containerd", "--config", str(config)],
                                   stdout=out, stderr=subprocess.STDOUT)
    ctr = ["ctr", "--address", str(socket)]
    try:
        _wait_for([*ctr, "version"], process, log)
        yield ctr
    finally:
        _stop(process)
        _unmount_under(folder)


def podman(folder: Path) -> list[str]:
    """The ``podman`` command prefix keeping storage, run state and networks in ``folder``."""
    require("podman")
    return ["podman", "--root", str(folder / "root"), "--runroot", str(folder / "runroot"),
            "--storage-driver=vfs", "--cgroup-manager=cgroupfs", "--events-backend=file",
            "--network-config-dir", str(folder / "networks")]
