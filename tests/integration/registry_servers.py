"""Real registries for the proxy tests: Debian's docker-registry (distribution 2.8) in token-auth
or htpasswd mode, a small token server, and skopeo to push and pull."""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support import free_port

SERVICE = "test-registry"
ISSUER = "test-token-issuer"


def require(*binaries: str) -> None:
    """Skip the test when a binary it runs is not installed."""
    for binary in binaries:
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (scripts/test.sh installs it)")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Grants every requested scope as an RS256 JWT whose x5c the registry trusts."""

    port: int
    ca_path: Path
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    received: list[tuple[str, str | None]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        """The URL the registry names in its challenge."""
        return f"http://127.0.0.1:{self.port}/token"

    def token(self, query: dict[str, list[str]], account: str) -> str:
        """A signed JWT granting the requested scopes."""
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": ISSUER, "sub": account, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)


def _self_signed(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@contextmanager
def token_server(folder: Path) -> Iterator[TokenServer]:
    """A token server on a thread (independent of the reactor), recording its requests."""
    key, cert = _self_signed("scarfgw test token signer")
    ca_path = folder / "token-ca.pem"
    ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tokens = TokenServer(free_port(), ca_path, key, cert)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            from urllib.parse import parse_qs, urlsplit

            parts = urlsplit(self.path)
            tokens.received.append((self.path, self.headers.get("Authorization")))
            query = parse_qs(parts.query)
            token = tokens.token(query, query.get("account", ["anonymous"])[0])
            issued = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = json.dumps({"token": token, "access_token": token, "expires_in": 300,
                               "issued_at": issued}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", tokens.port), Handler)
    tokens.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tokens
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Registry:
    """A running docker-registry: its address, and how to reach it with skopeo."""

    host: str
    scheme: str
    skopeo_flags: list[str]
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:port``)."""
        return f"{self.scheme}://{self.host}"


@contextmanager
def registry(folder: Path, auth: dict[str, Any] | None = None,
             tls: tuple[Path, Path] | None = None,
             skopeo_flags: list[str] | None = None) -> Iterator[Registry]:
    """Run ``docker-registry serve`` on a free loopback port until the block ends."""
    require("docker-registry")
    folder.mkdir(parents=True, exist_ok=True)
    host = f"127.0.0.1:{free_port()}"
    http: dict[str, Any] = {"addr": host, "secret": "not-a-secret-test-only",
                            "relativeurls": True}
    if tls is not None:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(folder / "data")},
                    "delete": {"enabled": True}},
        "http": http,
        "health": {"storagedriver": {"enabled": False}},
    }
    if auth is not None:
        config["auth"] = auth
    config_path = folder / "config.yml"
    config_path.write_text(json.dumps(config))
    log = (folder / "registry.log").open("wb")
    process = subprocess.Popen(["docker-registry", "serve", str(config_path)],
                               stdout=log, stderr=subprocess.STDOUT)
    scheme = "https" if tls else "http"
    running = Registry(host, scheme, skopeo_flags or ["--tls-verify=false"], process)
    try:
        _wait_until_answering(running.url + "/v2/", process)
        yield running
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _wait_until_answering(url: str, process: subprocess.Popen[bytes]) -> None:
    context = ssl._create_unverified_context()
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1, context=context)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry at {url} did not answer")


def skopeo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run skopeo (debug logging, so its requests can be read from stderr)."""
    require("skopeo")
    return subprocess.run(["skopeo", "--debug", *args], capture_output=True, text=True,
                          timeout=timeout,
                          env={**os.environ, "REGISTRY_AUTH_FILE": "/nonexistent/auth.json"})
