"""Pebble (the ACME test CA) on pre-picked loopback ports, an in-process twisted.names DNS
server answering A=127.0.0.1 and the TXT records a test sets, and a blocking TLS client."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from twisted.internet import defer, reactor
from twisted.names import dns, server

from tests.support import free_port

PEBBLE = Path("/usr/bin/pebble")


class FakeDNS:
    """A twisted.names resolver: every name has A 127.0.0.1; TXT records come from ``txt``."""

    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.port: Any = None

    @property
    def address(self) -> str:
        """host:port of the UDP listener."""
        return f"127.0.0.1:{self.port.getHost().port}"

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        """Answer one question."""
        name = query.name.name
        text = name.decode().rstrip(".").lower()
        answers = []
        if query.type == dns.A:
            answers.append(dns.RRHeader(name=name, type=dns.A, ttl=0,
                                        payload=dns.Record_A("127.0.0.1", ttl=0)))
        elif query.type == dns.TXT:
            answers += [dns.RRHeader(name=name, type=dns.TXT, ttl=0,
                                     payload=dns.Record_TXT(value.encode(), ttl=0))
                        for value in self.txt.get(text, [])]
        return defer.succeed((answers, [], []))

    def start(self) -> None:
        """Listen on an ephemeral UDP port on 127.0.0.1."""
        factory = server.DNSServerFactory(clients=[self])
        self.port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory),  # type: ignore[attr-defined]
                                      interface="127.0.0.1")


@dataclass
class Pebble:
    """A running pebble; ``http_port``/``tls_port`` are where its VA connects for challenges."""

    process: subprocess.Popen[bytes]
    directory: str
    ca_bundle: str
    http_port: int
    tls_port: int
    root_pem: bytes = b""
    intermediate: x509.Certificate | None = field(default=None)
    log_path: Path | None = None

    def stop(self) -> None:
        """Terminate the process (by its pid) and reap it."""
        self.process.terminate()
        self.process.wait(10)


def start_pebble(workdir: Path, dns_address: str) -> Pebble:
    """Start pebble with its own trustme listener certificate; wait until /dir answers."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    ca_path, cert_path, key_path = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    leaf.private_key_pem.write_to_path(str(key_path))
    leaf.cert_chain_pems[0].write_to_path(str(cert_path))
    acme_port, management_port = free_port(), free_port()
    http_port, tls_port = free_port(), free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(cert_path), "privateKey": str(key_path),
        "httpPort": http_port, "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}
    (workdir / "pebble.json").write_text(json.dumps(config))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
               PEBBLE_AUTHZREUSE="0")
    log_path = workdir / "pebble.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(PEBBLE), "-config", str(workdir / "pebble.json"), "-dnsserver", dns_address],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    context = ssl.create_default_context(cafile=str(ca_path))
    pebble = Pebble(process, f"https://127.0.0.1:{acme_port}/dir", str(ca_path),
                    http_port, tls_port, log_path=log_path)
    management = f"https://127.0.0.1:{management_port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(pebble.directory, context=context, timeout=2).read()
            pebble.root_pem = urllib.request.urlopen(f"{management}/roots/0", context=context,
                                                     timeout=2).read()
            pebble.intermediate = x509.load_pem_x509_certificate(urllib.request.urlopen(
                f"{management}/intermediates/0", context=context, timeout=2).read())
            return pebble
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pebble.stop()
                raise RuntimeError(f"pebble did not start: {log_path.read_text()}") from None
            time.sleep(0.05)


@dataclass
class TLSAnswer:
    """What one HTTPS exchange showed."""

    leaf: x509.Certificate
    alpn: str | None
    status: int
    headers: dict[str, str]


def _read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    pairs = (line.partition(":") for line in lines[1:])
    headers = {name.strip().lower(): value.strip() for name, _, value in pairs}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split(" ")[1]), headers


class TLSClient:
    """A blocking keep-alive HTTPS client (run it in a thread: the gateway shares the reactor)."""

    def __init__(self, port: int, server_name: str, root_pem: bytes | None) -> None:
        if root_pem is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cadata=root_pem.decode())
        context.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.server_name = server_name
        self.sock = context.wrap_socket(raw, server_hostname=server_name)

    def get(self, path: str) -> TLSAnswer:
        """One GET on the open connection."""
        request = f"GET {path} HTTP/1.1\r\nHost: {self.server_name}\r\n\r\n"
        self.sock.sendall(request.encode())
        status, headers = _read_response(self.sock)
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return TLSAnswer(x509.load_der_x509_certificate(der), self.sock.selected_alpn_protocol(),
                         status, headers)

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def https_get(port: int, server_name: str, path: str, root_pem: bytes | None) -> TLSAnswer:
    """Handshake with SNI ``server_name`` (verified against ``root_pem`` unless None), GET."""
    client = TLSClient(port, server_name, root_pem)
    try:
        return client.get(path)
    finally:
        client.close()
