"""The registry proxy against real registries and clients (docker-registry, skopeo), and its
streaming, pooling, timeout, redirect and header behaviour against in-process backends."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint

from scarfgw.rules.docker import token_path
from scarfgw.tls.certs import self_signed
from scarfgw.tls.store import CertStore
from tests.integration.registry_fakes import (
    PausingClient,
    start_blob_upstream,
    start_scripted,
    start_silent_upstream,
)
from tests.integration.registry_image import OCIImage, write_oci_layout
from tests.integration.registry_servers import (
    ISSUER,
    SERVICE,
    Registry,
    TokenServer,
    registry,
    require,
    skopeo,
    token_server,
)
from tests.support import deferLater, free_port, gateway_config, raw_request, start_gateway

BACKEND = "registry.test"
IMAGE = "library/hello"
MANIFEST = f"/v2/{IMAGE}/manifests/latest"
SKOPEO_ACCEPTS = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
]


def docker_rule(**extra: Any) -> dict[str, Any]:
    """A docker-v1 rule for library/hello on the gateway domain 127.0.0.1."""
    return {"type": "docker-v1", "domain": "127.0.0.1", "repository-name": IMAGE,
            "registry": BACKEND, "package-id": "pkg-hello", **extra}


def start_proxy(tmp_path: Path, upstream: str, rule: dict[str, Any] | None = None,
                **proxy: Any) -> Any:
    """A gateway proxying library/hello to ``upstream`` (the address of ``registry.test``)."""
    sections = {"rules": [rule or docker_rule()],
                "proxy": {"upstreams": {BACKEND: upstream}, **proxy}}
    return start_gateway(tmp_path, gateway_config(tmp_path, **sections))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> OCIImage:
    """The hand-written OCI image pushed to every registry."""
    return write_oci_layout(tmp_path_factory.mktemp("image") / "layout")


def push(image: OCIImage, target: Registry, *flags: str) -> None:
    """Push ``image`` to ``target`` as library/hello:latest, directly."""
    dest_flags = [flag.replace("--", "--dest-", 1) for flag in target.skopeo_flags]
    result = skopeo("copy", *dest_flags, *flags, f"oci:{image.layout}:latest",
                    f"docker://{target.host}/{IMAGE}:latest")
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    """The token server of the token-auth registry."""
    with token_server(tmp_path_factory.mktemp("tokens")) as server:
        yield server


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory, image: OCIImage,
                   tokens: TokenServer) -> Iterator[Registry]:
    """A plain-HTTP registry with token auth holding the image."""
    auth = {"token": {"realm": tokens.realm, "service": SERVICE, "issuer": ISSUER,
                      "rootcertbundle": str(tokens.ca_path)}}
    with registry(tmp_path_factory.mktemp("token-registry"), auth=auth) as running:
        push(image, running)
        yield running


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory, image: OCIImage
                   ) -> Iterator[tuple[Registry, Path]]:
    """A TLS registry with htpasswd basic auth holding the image, and its CA bundle."""
    require("htpasswd")
    folder = tmp_path_factory.mktemp("basic-registry")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_path = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_path))
    htpasswd = subprocess.run(["htpasswd", "-Bbn", "testuser", "testpass"],
                              capture_output=True, check=True).stdout
    (folder / "htpasswd").write_bytes(htpasswd)
    auth = {"htpasswd": {"realm": "test-realm", "path": str(folder / "htpasswd")}}
    with registry(folder / "registry", auth=auth, tls=(cert, key)) as running:
        push(image, running, "--dest-creds", "testuser:testpass")
        yield running, ca_path


def run_skopeo(*args: str) -> defer.Deferred[subprocess.CompletedProcess[str]]:
    """skopeo on a thread, so the reactor (and the gateway on it) keeps running."""
    return threads.deferToThread(skopeo, *args)


def assert_pulled(folder: Path, image: OCIImage) -> None:
    """The ``dir:`` copy holds the pushed manifest and blobs, digests intact."""
    manifest = (folder / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == image.manifest_digest
    for digest in image.blob_digests:
        data = (folder / digest.split(":", 1)[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest


def docker_events(gateway: Any) -> list[dict[str, Any]]:
    """Events of image requests (not the API root)."""
    return [event for event in gateway.events() if event["image"] == IMAGE]


@pytest_twisted.inlineCallbacks
def test_skopeo_pulls_anonymously_from_a_token_registry(
    tmp_path: Path, image: OCIImage, token_registry: Registry, tokens: TokenServer
) -> Any:
    gateway = yield start_proxy(tmp_path, token_registry.url)
    source = f"docker://127.0.0.1:{gateway.port}/{IMAGE}:latest"
    before = len(tokens.received)
    try:
        inspected = yield run_skopeo("inspect", "--tls-verify=false", source)
        assert inspected.returncode == 0, inspected.stderr[-2000:]
        assert json.loads(inspected.stdout)["Digest"] == image.manifest_digest
        pulled = yield run_skopeo("copy", "--src-tls-verify=false", source,
                                  f"dir:{tmp_path / 'pulled'}")
        assert pulled.returncode == 0, pulled.stderr[-2000:]
    finally:
        yield gateway.stop()
    assert_pulled(tmp_path / "pulled", image)
    assert len(tokens.received) > before
    events = docker_events(gateway)
    manifests = [e for e in events if e["object"] == "manifest" and e["status"] == 200]
    assert manifests and all(e["pull"] and e["method"] == "GET" for e in manifests)
    assert any(e["status"] == 401 for e in gateway.events())
    blobs = {e["reference"] for e in events if e["object"] == "blob" and e["status"] == 200}
    assert blobs == image.blob_digests
    assert all(not e["pull"] for e in events if e["object"] == "blob")
    assert {e["backend"] for e in events} == {BACKEND}


@pytest_twisted.inlineCallbacks
def test_skopeo_pulls_with_basic_credentials_from_a_tls_registry(
    tmp_path: Path, image: OCIImage, basic_registry: tuple[Registry, Path]
) -> Any:
    upstream, ca_path = basic_registry
    bundle = tmp_path / "bundle.pem"  # an unrelated CA first: every certificate is trusted
    bundle.write_bytes(self_signed("other-ca.test", time.time(), 3600).chain_pem()
                       + ca_path.read_bytes())
    gateway = yield start_proxy(tmp_path, upstream.url, ca_bundle=str(bundle))
    source = f"docker://127.0.0.1:{gateway.port}/{IMAGE}:latest"
    creds = ("--src-creds", "testuser:testpass")
    try:
        pulled = yield run_skopeo("copy", "--src-tls-verify=false", *creds, source,
                                  f"dir:{tmp_path / 'pulled'}")
        assert pulled.returncode == 0, pulled.stderr[-2000:]
        refused = yield run_skopeo("inspect", "--tls-verify=false", "--creds", "testuser:wrong",
                                   source)
        basic = "Basic " + base64.b64encode(b"testuser:testpass").decode()
        head = yield raw_request(gateway.port, "HEAD", MANIFEST, [
            ("Host", "127.0.0.1"), ("Authorization", basic), ("User-Agent", "docker/27.0"),
            ("Accept", "application/vnd.oci.image.manifest.v1+json"),
        ])
    finally:
        yield gateway.stop()
    assert_pulled(tmp_path / "pulled", image)
    assert refused.returncode != 0
    assert head.status == 200
    assert head.header("docker-content-digest") == image.manifest_digest
    manifest_size = len((tmp_path / "pulled" / "manifest.json").read_bytes())
    assert head.header("content-length") == str(manifest_size)
    heads = [e for e in docker_events(gateway) if e["method"] == "HEAD"]
    assert [(e["object"], e["pull"], e["status"]) for e in heads] == [("manifest", False, 200)]


@pytest_twisted.inlineCallbacks
def test_a_redirect_capable_client_gets_the_307(tmp_path: Path) -> Any:
    fake = yield start_scripted({})
    gateway = yield start_proxy(tmp_path, fake.url)
    try:
        response = yield raw_request(gateway.port, "GET", MANIFEST,
                                     [("Host", "127.0.0.1"), ("User-Agent", "docker/27.0")])
    finally:
        yield gateway.stop()
        yield fake.port.stopListening()
    assert response.status == 307
    assert response.header("location") == f"https://{BACKEND}{MANIFEST}"
    assert fake.received == []
    assert [(e["status"], e["pull"]) for e in docker_events(gateway)] == [(307, True)]


@pytest_twisted.inlineCallbacks
def test_token_realm_rewrite_hides_the_token_server(
    tmp_path: Path, image: OCIImage, token_registry: Registry, tokens: TokenServer
) -> Any:
    gateway = yield start_proxy(tmp_path, token_registry.url,
                                docker_rule(**{"token-realm": "rewrite"}))
    own = f"127.0.0.1:{gateway.port}"
    before = len(tokens.received)
    try:
        direct = yield raw_request(gateway.port, "GET",
                                   f"{token_path(BACKEND)}?service={SERVICE}"
                                   f"&scope=repository:{IMAGE}:pull",
                                   [("Host", own)])
        challenge = yield raw_request(gateway.port, "GET", MANIFEST, [("Host", own)])
        inspected = yield run_skopeo("inspect", "--tls-verify=false",
                                     f"docker://{own}/{IMAGE}:latest")
    finally:
        yield gateway.stop()
    assert direct.status == 200 and "token" in json.loads(direct.body)
    assert challenge.status == 401
    assert challenge.header("www-authenticate") == (
        f'Bearer realm="http://{own}{token_path(BACKEND)}",service="{SERVICE}",'
        f'scope="repository:{IMAGE}:pull"'
    )
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    assert json.loads(inspected.stdout)["Digest"] == image.manifest_digest
    assert str(tokens.port) not in inspected.stderr
    assert len(tokens.received) > before
    assert all(e["image"] != "" or e["method"] == "GET" for e in gateway.events())
    assert not any(e["path"].startswith("/v2/token") for e in gateway.events())


@pytest_twisted.inlineCallbacks
def test_a_paused_client_stops_the_upstream_and_leaving_aborts_it(tmp_path: Path) -> Any:
    size = 256 << 20
    blob, port = yield start_blob_upstream(size)
    gateway = yield start_proxy(tmp_path, f"http://127.0.0.1:{port.getHost().port}")
    request = (f"GET /v2/{IMAGE}/blobs/sha256:{'0' * 64} HTTP/1.1\r\n"
               "Host: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n").encode()
    client = PausingClient(request)
    try:
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.port).connect(
            protocol.Factory.forProtocol(lambda: client))
        yield client.first_data
        previous = -1
        while blob.sent != previous:
            previous = blob.sent
            yield deferLater(0.3)
        assert blob.sent < 64 << 20, "upstream kept sending to a paused client"
        client.abort()
        yield client.closed
        yield with_timeout(blob.aborted, 5)
    finally:
        yield gateway.stop()
        yield port.stopListening()
    assert blob.sent < size
    assert [(e["object"], e["status"]) for e in docker_events(gateway)] == [("blob", 200)]


def with_timeout(deferred: defer.Deferred[Any], seconds: float) -> defer.Deferred[Any]:
    """``deferred``, failing with a timeout after ``seconds``."""
    return deferred.addTimeout(seconds, reactor)


@pytest_twisted.inlineCallbacks
def test_pooled_connections_are_reused(tmp_path: Path) -> Any:
    fake = yield start_scripted({MANIFEST: (200, [("Content-Type", "text/plain")], b"ok")})
    gateway = yield start_proxy(tmp_path, fake.url, max_connections_per_host=3)
    try:
        statuses = []
        for _ in range(3):
            response = yield raw_request(gateway.port, "GET", MANIFEST, [("Host", "127.0.0.1")])
            statuses.append(response.status)
        pool = gateway.service.proxy.pool
    finally:
        yield gateway.stop()
        yield fake.port.stopListening()
    assert statuses == [200, 200, 200]
    assert len(fake.received) == 3
    assert fake.site.connections == 1
    assert pool.persistent and pool.maxPersistentPerHost == 3


@pytest_twisted.inlineCallbacks
def test_unreachable_and_silent_backends_give_registry_errors(tmp_path: Path) -> Any:
    silent = yield start_silent_upstream()
    working = yield start_scripted({"/v2/library/ok/manifests/latest": (200, [], b"ok")})
    gateway = yield start_gateway(tmp_path, gateway_config(
        tmp_path,
        rules=[docker_rule(), docker_rule(**{"repository-name": "library/silent",
                                            "registry": "silent.test"}),
               docker_rule(**{"repository-name": "library/ok", "registry": "ok.test"})],
        proxy={"upstreams": {BACKEND: f"http://127.0.0.1:{free_port()}",
                             "silent.test": f"http://127.0.0.1:{silent.getHost().port}",
                             "ok.test": working.url},
               "response_timeout": 1.0, "connect_timeout": 2},
    ))
    host = [("Host", "127.0.0.1")]
    try:
        unreachable = yield raw_request(gateway.port, "GET", MANIFEST, host)
        slow = yield raw_request(gateway.port, "GET", "/v2/library/silent/manifests/1", host)
        after = yield raw_request(gateway.port, "GET", "/v2/library/ok/manifests/latest", host)
    finally:
        yield gateway.stop()
        yield silent.stopListening()
        yield working.port.stopListening()
    for response, status in ((unreachable, 502), (slow, 504)):
        assert response.status == status
        assert response.header("content-type") == "application/json"
        error = json.loads(response.body)["errors"][0]
        assert error["code"] == "UNAVAILABLE" and "127.0.0.1" not in error["message"]
    assert (after.status, after.body) == (200, b"ok")
    assert [e["status"] for e in gateway.events()] == [502, 504, 200]


@pytest_twisted.inlineCallbacks
def test_registry_redirects_are_followed_and_storage_redirects_handed_over(
    tmp_path: Path
) -> Any:
    other = yield start_scripted({MANIFEST: (200, [], b"from the other registry")},
                                 interface="127.0.0.2")
    loop = f"/v2/{IMAGE}/manifests/loop"
    fake = yield start_scripted({
        MANIFEST: (307, [("Location", other.url + MANIFEST)], b""),
        f"/v2/{IMAGE}/manifests/relative": (302, [("Location", " /v2/" + IMAGE
                                                   + "/manifests/final?x=1 ")], b""),
        f"/v2/{IMAGE}/manifests/final": (200, [], b"final"),
        f"/v2/{IMAGE}/blobs/sha256:aa": (307, [("Location", "/storage/aa?sig=1")], b"x"),
        f"/v2/{IMAGE}/blobs/sha256:bb": (302, [("Location", "https://cdn.test/bb")], b""),
        loop: (307, [("Location", loop)], b""),
    })
    gateway = yield start_proxy(tmp_path, fake.url, max_redirects=3)
    headers = [("Host", "127.0.0.1"), ("Authorization", "Bearer secret")]
    try:
        moved = yield raw_request(gateway.port, "GET", MANIFEST, headers)
        relative = yield raw_request(gateway.port, "GET", f"/v2/{IMAGE}/manifests/relative",
                                     headers)
        storage = yield raw_request(gateway.port, "GET", f"/v2/{IMAGE}/blobs/sha256:aa", headers)
        cdn = yield raw_request(gateway.port, "GET", f"/v2/{IMAGE}/blobs/sha256:bb", headers)
        looping = yield raw_request(gateway.port, "GET", loop, headers)
    finally:
        yield gateway.stop()
        yield fake.port.stopListening()
        yield other.port.stopListening()
    assert (moved.status, moved.body) == (200, b"from the other registry")
    assert ("Authorization", "Bearer secret") not in other.received[0].headers
    assert (relative.status, relative.body) == (200, b"final")
    final = next(r for r in fake.received if r.path.endswith("/final"))
    assert final.query == "x=1" and ("Authorization", "Bearer secret") in final.headers
    assert storage.status == 307
    assert storage.header("location") == f"https://{BACKEND}/storage/aa?sig=1"
    assert (storage.header("content-length"), storage.body) == ("0", b"")
    assert (cdn.status, cdn.header("location")) == (302, "https://cdn.test/bb")
    assert looping.status == 307
    assert len([r for r in fake.received if r.path == loop]) == 4
    assert [e["status"] for e in docker_events(gateway)] == [200, 200, 307, 302, 307]


@pytest_twisted.inlineCallbacks
def test_headers_are_filtered_both_ways_and_the_body_is_untouched(tmp_path: Path) -> Any:
    gzipped = bytes(range(256)) * 40
    fake = yield start_scripted({MANIFEST: (200, [
        ("Content-Encoding", "gzip"), ("Keep-Alive", "timeout=5"), ("Connection", "keep-alive"),
        ("Proxy-Authenticate", "Basic"), ("Trailer", "X-Sum"), ("X-Kept", "yes"),
    ], gzipped)})
    gateway = yield start_proxy(tmp_path, fake.url)
    headers = [("Host", "127.0.0.1"), ("Connection", "X-Secret"), ("X-Secret", "s"),
               ("Keep-Alive", "300"), ("TE", "trailers"), ("Proxy-Authorization", "p"),
               ("Upgrade", "h2c"), ("X-Forwarded-For", "203.0.113.7"),
               ("Accept-Encoding", "gzip"), *(("Accept", value) for value in SKOPEO_ACCEPTS)]
    try:
        response = yield raw_request(gateway.port, "GET", MANIFEST, headers)
        refused = yield raw_request(gateway.port, "POST", MANIFEST, [("Host", "127.0.0.1")])
    finally:
        yield gateway.stop()
        yield fake.port.stopListening()
    assert len(fake.received) == 1
    sent = fake.received[0]
    names = {name.lower() for name, _ in sent.headers}
    assert names.isdisjoint({"x-secret", "keep-alive", "te", "proxy-authorization", "upgrade"})
    assert [v for k, v in sent.headers if k.lower() == "accept"] == SKOPEO_ACCEPTS
    assert [v for k, v in sent.headers if k.lower() == "x-forwarded-for"] == [
        "203.0.113.7, 127.0.0.1"]
    assert ("Accept-Encoding", "gzip") in sent.headers
    assert response.status == 200 and response.body == gzipped
    assert response.header("content-length") == str(len(gzipped))
    assert response.header("content-encoding") == "gzip"
    assert response.header("x-kept") == "yes"
    for hop_by_hop in ("keep-alive", "proxy-authenticate", "trailer"):
        assert response.header(hop_by_hop) is None, hop_by_hop
    assert refused.status == 405
    assert json.loads(refused.body)["errors"][0]["code"] == "UNSUPPORTED"
    assert [e["status"] for e in docker_events(gateway)] == [200, 405]



@pytest_twisted.inlineCallbacks
def test_skopeo_pulls_with_a_token_over_plain_http_for_a_domain_with_a_certificate(
    tmp_path: Path, image: OCIImage, token_registry: Registry, tokens: TokenServer
) -> Any:
    """skopeo sends its Bearer token to the plain port it was given: /v2 is answered there,
    not sent on to https with a 308 (Go drops Authorization on a redirect to another port)."""
    storage = tmp_path / "tls"
    CertStore(str(storage), reactor, "test").save(
        "127.0.0.1", self_signed("127.0.0.1", time.time(), 90 * 86400))
    config = gateway_config(
        tmp_path, rules=[docker_rule()], proxy={"upstreams": {BACKEND: token_registry.url}},
        listen={"http": "tcp:0:interface=127.0.0.1", "https": "tcp:0:interface=127.0.0.1",
                "admin": "tcp:0:interface=127.0.0.1", "insights": None},
        tls={"storage": str(storage), "acme": {"directory": "http://127.0.0.1:9/directory"},
             "verification": {"mode": "none"}})
    gateway = yield start_gateway(tmp_path, config)
    source = f"docker://127.0.0.1:{gateway.port}/{IMAGE}:latest"
    before = len(tokens.received)
    try:
        assert gateway.service.tls.has_certificate("127.0.0.1")
        elsewhere = yield raw_request(gateway.port, "GET", "/other", [("Host", "127.0.0.1")])
        pulled = yield run_skopeo("copy", "--src-tls-verify=false", source,
                                  f"dir:{tmp_path / 'pulled'}")
        assert pulled.returncode == 0, pulled.stderr[-2000:]
    finally:
        yield gateway.stop()
    assert elsewhere.status == 308
    assert_pulled(tmp_path / "pulled", image)
    assert len(tokens.received) > before
    assert any(e["status"] == 401 for e in gateway.events())
    assert [e["status"] for e in docker_events(gateway) if e["object"] == "manifest"] == [200]
