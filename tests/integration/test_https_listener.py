"""The https listener's TLS layer through real sockets: keep-alive and pipelined requests,
a streamed multi-megabyte proxied body read slowly, a client's close_notify, and bytes that
are not TLS."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from zope.interface import provider

from scarfgw.tls.certs import self_signed
from scarfgw.tls.store import CertStore
from tests.support import gateway_config, start_fake_upstream, start_gateway

pytestmark = pytest.mark.integration

DOMAIN = "cr.example.test"
MANIFEST = "/v2/library/hello/manifests/latest"
BLOB = os.urandom(6 * 1024 * 1024)


@pytest_twisted.inlineCallbacks
def start_https(tmp_path: Path, upstream: str) -> Any:
    """A gateway with an https listener serving a stored certificate for DOMAIN, whose docker
    rule proxies non-docker clients to ``upstream``."""
    storage = tmp_path / "tls"
    CertStore(str(storage), reactor, "test").save(
        DOMAIN, self_signed(DOMAIN, time.time() - 60, 30 * 86400))
    config = gateway_config(
        tmp_path,
        rules=[{"type": "docker-v1", "domain": DOMAIN, "repository-name": "library/hello",
                "registry": "registry.test", "package-id": "p1"}],
        proxy={"upstreams": {"registry.test": upstream}},
        tls={"storage": str(storage), "verification": {"mode": "none"},
             "acme": {"directory": "https://127.0.0.1:9/directory"}},
    )
    config["listen"]["https"] = "tcp:0:interface=127.0.0.1"
    gateway = yield start_gateway(tmp_path, config)
    return gateway, int(gateway.service.ports["https"].getHost().port)


def tls_socket(port: int) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                           server_hostname=DOMAIN)


def request(user_agent: str = "docker/27.0", close: bool = False) -> bytes:
    return (f"GET {MANIFEST} HTTP/1.1\r\nHost: {DOMAIN}\r\nUser-Agent: {user_agent}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def read_until_closed(sock: ssl.SSLSocket, pause: float = 0.0) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        time.sleep(pause)
    return data


def keep_alive_and_pipelined(port: int) -> list[bytes]:
    with tls_socket(port) as sock:
        sock.sendall(request())
        first = sock.recv(65536)
        sock.sendall(request() + request() + request(close=True))
        rest = read_until_closed(sock)
    return [first, rest]


@pytest_twisted.inlineCallbacks
def test_keep_alive_and_pipelined_requests_are_answered_in_order(tmp_path):
    upstream = yield start_fake_upstream()
    gateway, port = yield start_https(tmp_path, upstream.url)
    try:
        first, rest = yield threads.deferToThread(keep_alive_and_pipelined, port)
    finally:
        yield gateway.stop()
        yield upstream.port.stopListening()
    assert first.startswith(b"HTTP/1.1 307 ")
    assert rest.count(b"HTTP/1.1 307 ") == 3 and rest.count(b"Connection: close") == 1


def slow_download(port: int) -> bytes:
    with tls_socket(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(request("skopeo/1.9", close=True))
        return read_until_closed(sock, pause=0.002)


@pytest_twisted.inlineCallbacks
def test_a_proxied_body_streams_complete_to_a_slow_tls_client(tmp_path):
    upstream = yield start_fake_upstream(200, {"Content-Type": "application/octet-stream"},
                                         BLOB)
    gateway, port = yield start_https(tmp_path, upstream.url)
    try:
        answer = yield threads.deferToThread(slow_download, port)
    finally:
        yield gateway.stop()
        yield upstream.port.stopListening()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert hashlib.sha256(body).digest() == hashlib.sha256(BLOB).digest()


def close_notify_then_reconnect(port: int) -> tuple[bytes, bytes, bytes]:
    sock = tls_socket(port)
    sock.sendall(request())
    answer = sock.recv(65536)
    raw = sock.unwrap()  # our close_notify; the server answers with its own and closes
    closed = raw.recv(100)
    raw.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = plain.recv(100)
    return answer, closed, refused


@pytest_twisted.inlineCallbacks
def test_close_notify_and_plain_http_end_the_connection_without_errors(tmp_path):
    errors: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.error, LogLevel.critical):
            errors.append(event)

    upstream = yield start_fake_upstream()
    gateway, port = yield start_https(tmp_path, upstream.url)
    globalLogPublisher.addObserver(observe)
    try:
        answer, closed, refused = yield threads.deferToThread(close_notify_then_reconnect, port)
    finally:
        globalLogPublisher.removeObserver(observe)
        yield gateway.stop()
        yield upstream.port.stopListening()
    assert answer.startswith(b"HTTP/1.1 307 ")
    assert closed == b""
    assert refused == b"", "plain HTTP on the TLS port: closed, not answered"
    assert errors == []
