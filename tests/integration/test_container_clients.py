"""Real container clients pulling through a ``twistd scarfgw`` from docker-registry 2.8:
docker (dockerd), containerd (``ctr``), podman and skopeo; registries over plain HTTP, TLS,
TLS with token auth and TLS with Basic auth; redirected (docker, containerd) and proxied
(everyone with ``always-proxy``, and podman and skopeo always); the gateway over HTTP and
over HTTPS with an operator certificate the clients trust; a multi-arch index whose amd64
image has a 64 MiB layer. Every pull is checked in the client's result and in the events
(runtime, image, reference, pull, the layer). Each case pulls its own image: dockerd keeps
manifests it has seen (even after ``rmi``) and then only sends a HEAD. About 30 s."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.integration.container_engines import (
    DOCKER_CLI,
    containerd,
    dockerd,
    loopback_names,
    podman,
)
from tests.integration.registry_image import (
    OCIImage,
    write_multiarch_layout,
    write_oci_layout,
)
from tests.integration.registry_servers import (
    ISSUER,
    SERVICE,
    Registry,
    registry,
    require,
    skopeo,
    token_server,
)
from tests.support import (
    free_port,
    jsonl_events,
    start_twistd,
    wait_ready,
    write_config,
    write_tls_pair,
)

USER, PASSWORD = "testuser", "testpass"
BIG_LAYER = 64 << 20
# Gateway domains (all resolve to 127.0.0.1): one per registry, plus an always-proxy one,
# and one served over HTTPS with an operator certificate for *.crs.test.
PLAIN, TLS, PROXIED, TOKEN, BASIC = (f"{kind}.cr.test" for kind in
                                     ("plain", "tls", "proxied", "token", "basic"))
SECURE = "tls.crs.test"
BIG = "library/big"
CASES = [  # (gateway domain, image)
    (PLAIN, "library/plain"), (TLS, "library/tls"), (PROXIED, "library/proxied"),
    (TOKEN, "library/token"), (BASIC, "library/basic"), (SECURE, "library/secure"), (TLS, BIG),
]


@dataclass
class Setup:
    """What the pulls need: gateway ports, the CA, images, the events file."""

    http: int
    https: int
    ca: Path
    cert_dir: Path
    events: Path
    images: dict[str, OCIImage]

    def address(self, domain: str) -> str:
        """``domain:port`` of the gateway listener serving ``domain``."""
        return f"{domain}:{self.https if domain == SECURE else self.http}"

    def events_since(self, offset: int) -> list[dict[str, Any]]:
        """Events written after byte ``offset``."""
        with self.events.open("rb") as handle:
            handle.seek(offset)
            return [json.loads(line) for line in handle.read().splitlines()]


def _push(image: OCIImage, target: Registry, name: str, *flags: str) -> None:
    result = skopeo("copy", "--all", "--dest-tls-verify=false", *flags,
                    f"oci:{image.layout}:latest", f"docker://{target.host}/{name}:latest",
                    timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Four registries holding the images, and a twistd gateway in front of them."""
    require("docker-registry", "skopeo", "htpasswd")
    folder = tmp_path_factory.mktemp("clients")
    ca = trustme.CA()
    ca_path, cert_dir = folder / "ca.pem", folder / "certs"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_dir.mkdir()
    ca.cert_pem.write_to_path(str(cert_dir / "ca.crt"))
    registry_tls = folder / "registry.pem", folder / "registry.key"
    write_tls_pair(ca, *registry_tls, "127.0.0.1", "localhost")
    gateway_cert, gateway_key = folder / "gateway.pem", folder / "gateway.key"
    write_tls_pair(ca, gateway_cert, gateway_key, "*.crs.test")
    (folder / "htpasswd").write_bytes(subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, check=True).stdout)
    images = {image: write_oci_layout(folder / image, content=image.encode())
              for _, image in CASES if image != BIG}
    images[BIG] = write_multiarch_layout(folder / "big", BIG_LAYER)
    with contextlib.ExitStack() as stack:
        tokens = stack.enter_context(token_server(folder))
        plain = stack.enter_context(registry(folder / "plain"))
        tls = stack.enter_context(registry(folder / "tls", tls=registry_tls))
        token = stack.enter_context(registry(folder / "token", tls=registry_tls, auth={
            "token": {"realm": tokens.realm, "service": SERVICE, "issuer": ISSUER,
                      "rootcertbundle": str(tokens.ca_path)}}))
        basic = stack.enter_context(registry(folder / "basic", tls=registry_tls, auth={
            "htpasswd": {"realm": "test-realm", "path": str(folder / "htpasswd")}}))
        registries = {PLAIN: plain, TLS: tls, PROXIED: tls, TOKEN: token, BASIC: basic,
                      SECURE: tls}
        for domain, image in CASES:
            creds = ("--dest-creds", f"{USER}:{PASSWORD}") if domain == BASIC else ()
            _push(images[image], registries[domain], image, *creds)

        def rule(domain: str, image: str, **extra: Any) -> dict[str, Any]:
            return {"type": "docker-v1", "domain": domain, "repository-name": image,
                    "registry": registries[domain].host, "package-id": image, **extra}

        http, https, admin = free_port(), free_port(), free_port()
        config = {
            "listen": {"http": f"tcp:{http}:interface=127.0.0.1",
                       "https": f"tcp:{https}:interface=127.0.0.1",
                       "admin": f"tcp:{admin}:interface=127.0.0.1", "insights": None},
            "rules": [rule(domain, image, **(
                {"registry": "plain-registry.test", "always-proxy": True} if domain == PLAIN
                else {"always-proxy": True} if domain == PROXIED else {}))
                for domain, image in CASES],
            "proxy": {"upstreams": {"plain-registry.test": plain.url}, "ca_bundle": str(ca_path),
                      "response_timeout": 120},
            "tls": {"storage": str(folder / "tls-storage"), "verification": {"mode": "none"},
                    "certificates": [{"cert": str(gateway_cert), "key": str(gateway_key)}]},
            "events": jsonl_events(folder, 0.05),
        }
        log = folder / "twistd.log"
        process = start_twistd(write_config(folder, config), log)
        stack.callback(process.wait, 30)
        stack.callback(process.send_signal, signal.SIGTERM)
        stack.enter_context(loopback_names([PLAIN, TLS, PROXIED, TOKEN, BASIC, SECURE]))
        wait_ready(admin, process, log)
        yield Setup(http, https, ca_path, cert_dir, folder / "events.jsonl", images)


@dataclass
class Client:
    """One container client: whether it is redirected, what its output shows of a pulled
    image (a digest), how it pulls ``address/image:latest`` and forgets it again."""

    runtime: str
    redirected: bool
    shows: Callable[[OCIImage], str]
    pull: Callable[[Setup, str, str], subprocess.CompletedProcess[str]]
    forget: Callable[[str], None]


def _index_or_manifest(image: OCIImage) -> str:
    return image.pulled_digest


def _image_id(image: OCIImage) -> str:
    return image.config_digest.split(":", 1)[1]


def _config(image: OCIImage) -> str:
    return f"Copying config {image.config_digest}"


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """docker through a private dockerd; logs in first where the registry wants Basic."""
    with dockerd(tmp_path_factory.mktemp("dockerd")) as env:
        def pull(setup: Setup, domain: str, image: str) -> subprocess.CompletedProcess[str]:
            address = setup.address(domain)
            if domain == BASIC:
                login = subprocess.run([DOCKER_CLI, "login", "-u", USER, "--password-stdin",
                                        address], input=PASSWORD, capture_output=True,
                                       text=True, env=env, timeout=60)
                assert login.returncode == 0, login.stderr
            return _run([DOCKER_CLI, "pull", f"{address}/{image}:latest"], env)

        def forget(reference: str) -> None:
            _run([DOCKER_CLI, "rmi", "-f", reference], env)

        yield Client("docker", True, _index_or_manifest, pull, forget)


@pytest.fixture(scope="module")
def ctr_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """ctr through a private containerd, trusting the test CA (redirect targets, HTTPS)."""
    with containerd(tmp_path_factory.mktemp("containerd")) as ctr:
        def pull(setup: Setup, domain: str, image: str) -> subprocess.CompletedProcess[str]:
            flags = [] if domain == SECURE else ["--plain-http"]
            if domain == BASIC:
                flags += ["--user", f"{USER}:{PASSWORD}"]
            return _run([*ctr, "images", "pull", *flags,
                         f"{setup.address(domain)}/{image}:latest"],
                        {**os.environ, "SSL_CERT_FILE": str(setup.ca)})

        def forget(reference: str) -> None:
            _run([*ctr, "images", "rm", "--sync", reference])

        yield Client("containerd", True, _index_or_manifest, pull, forget)


@pytest.fixture(scope="module")
def podman_client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    """podman with private storage; trusts the test CA for the HTTPS gateway."""
    command = podman(tmp_path_factory.mktemp("podman"))

    def pull(setup: Setup, domain: str, image: str) -> subprocess.CompletedProcess[str]:
        flags = (["--cert-dir", str(setup.cert_dir)] if domain == SECURE
                 else ["--tls-verify=false"])
        if domain == BASIC:
            flags += ["--creds", f"{USER}:{PASSWORD}"]
        return _run([*command, "pull", *flags, f"{setup.address(domain)}/{image}:latest"])

    def forget(reference: str) -> None:
        _run([*command, "rmi", "-f", reference])

    return Client("podman", False, _image_id, pull, forget)


@pytest.fixture(scope="module")
def skopeo_client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    """skopeo copying the image into a ``dir:`` folder."""
    target = tmp_path_factory.mktemp("skopeo")

    def pull(setup: Setup, domain: str, image: str) -> subprocess.CompletedProcess[str]:
        flags = (["--src-cert-dir", str(setup.cert_dir)] if domain == SECURE
                 else ["--src-tls-verify=false"])
        if domain == BASIC:
            flags += ["--src-creds", f"{USER}:{PASSWORD}"]
        folder = target / domain / image
        folder.mkdir(parents=True)
        return skopeo("copy", *flags, f"docker://{setup.address(domain)}/{image}:latest",
                      f"dir:{folder}", timeout=300)

    def forget(reference: str) -> None:
        pass

    return Client("skopeo", False, _config, pull, forget)


CLIENTS = ["docker_client", "ctr_client", "podman_client", "skopeo_client"]


@pytest.mark.parametrize(("domain", "image"), CASES, ids=[
    "plain-registry", "tls-registry", "always-proxy", "token-registry", "basic-registry",
    "https-gateway", "multiarch-64MiB"])
@pytest.mark.parametrize("client_fixture", CLIENTS)
def test_pull_through_the_gateway(setup: Setup, client_fixture: str, domain: str, image: str,
                                  request: pytest.FixtureRequest) -> None:
    client: Client = request.getfixturevalue(client_fixture)
    offset = setup.events.stat().st_size if setup.events.exists() else 0
    reference = f"{setup.address(domain)}/{image}:latest"
    started = time.monotonic()
    result = client.pull(setup, domain, image)
    try:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    finally:
        client.forget(reference)
    pulled = setup.images[image]
    assert client.shows(pulled) in result.stdout + result.stderr, "the image pulled"
    events = _pull_events(setup, offset, pulled, image)
    redirected = client.redirected and domain not in (PLAIN, PROXIED)
    assert {e["client"]["runtime"] for e in events} == {client.runtime}
    assert {e["status"] for e in events if e["pull"]} == {307 if redirected else 200}
    assert "latest" in {e["reference"] for e in events}
    assert {e["image"] for e in events} == {image}
    layers = [e for e in events if e["reference"] == pulled.layer_digest]
    assert [e["status"] for e in layers] == [307 if redirected else 200], events
    print(f"{client.runtime} {domain} {image}: {time.monotonic() - started:.1f} s")


def _pull_events(setup: Setup, offset: int, image: OCIImage, name: str
                 ) -> list[dict[str, Any]]:
    """The events of ``name`` after ``offset``, once a pull (a manifest GET) and the layer
    are among them (the gateway writes them in batches)."""
    for _ in range(100):
        events = [e for e in setup.events_since(offset) if e.get("image") == name]
        if (any(e["pull"] for e in events)
                and any(e["reference"] == image.layer_digest for e in events)):
            return events
        time.sleep(0.05)
    raise AssertionError(f"no pull of {name}: {setup.events_since(offset)}")
