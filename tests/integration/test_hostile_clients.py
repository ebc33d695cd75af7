"""What a hostile client can make the gateway do, through real sockets on loopback (issue 11):
memory of a client that never reads, refusals that close, idle connections kept open with
empty lines or hoarded, dot-segment escapes, deep JSON, a removed JSONL directory, forwarding
headers, the listen backlog, and cut proxied bodies."""

from __future__ import annotations

import http.client
import re
import select
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest_twisted
from twisted.internet import protocol, reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher

from scarfgw.ops import metrics
from tests.support import (
    docker_rule,
    free_port,
    gateway_config,
    http_get,
    jsonl_events,
    loopback_listeners,
    raw_request,
    start_fake_upstream,
    start_gateway,
    start_twistd,
    wait_ready,
    write_config,
)

DOMAIN = "cr.example.test"
MANIFEST = "/v2/library/hello/manifests/latest"
PROXIED = {**docker_rule(DOMAIN, "registry.example.test"), "always-proxy": True}
FILES = {"type": "file-v1", "domain": "dl.example.test", "incoming-path": "/dl/{version}/{+path}",
         "outgoing-url": "https://files.example.test/{version}/{+path}", "package-id": "f1"}
NEXT = f"GET {MANIFEST} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode()


def converse(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload`` and read until the gateway closes (or ``timeout`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


def proxying_config(tmp_path: Path, upstream: str, **sections: Any) -> dict[str, Any]:
    """The always-proxy docker rule of ``DOMAIN`` with ``registry.example.test`` at
    ``upstream``."""
    return gateway_config(tmp_path, rules=[PROXIED],
                          proxy={"upstreams": {"registry.example.test": upstream}}, **sections)


class Logged:
    """Every log event of the test run, while used as a context manager."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Logged:
        globalLogPublisher.addObserver(cast(ILogObserver, self.observe))
        return self

    def __exit__(self, *_: object) -> None:
        globalLogPublisher.removeObserver(cast(ILogObserver, self.observe))

    def observe(self, event: LogEvent) -> None:
        self.events.append(event)

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Events with a traceback, or at level error/critical."""
        return [event for event in self.events if "log_failure" in event
                or event.get("log_level") in (LogLevel.error, LogLevel.critical)]



def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def open_connections(admin: int) -> float:
    """``scarfgw_open_connections{listener="http"}`` of the gateway at ``admin``."""
    body = http_get(f"http://127.0.0.1:{admin}/metrics")[2].decode()
    found = re.search(r'scarfgw_open_connections\{listener="http"\} (\S+)', body)
    return float(found.group(1)) if found else 0.0


def pipeline_without_reading(port: int, rss: Any, seconds: float) -> tuple[int, float | None,
                                                                          int]:
    """Send pipelined requests for ``seconds`` and read nothing; sample ``rss()`` all along.

    Returns the peak RSS, when the gateway cut the connection (seconds since the start, or
    None), and the bytes sent.
    """
    request = (f"GET {MANIFEST} HTTP/1.1\r\nHost: {DOMAIN}\r\n"
               "User-Agent: docker/27.0\r\n\r\n").encode() * 64
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    started = time.monotonic()
    peak, sent, cut = rss(), 0, None
    next_sample = started
    try:
        while (now := time.monotonic()) - started < seconds:
            if now >= next_sample:
                peak, next_sample = max(peak, rss()), now + 0.05
            try:
                sent += sock.send(request)
            except BlockingIOError:
                select.select([], [sock], [], 0.05)
            except OSError:
                cut = now - started
                break
            if not select.select([sock], [], [], 0)[0]:
                continue
            try:
                sock.recv(1, socket.MSG_PEEK)  # readable: answers waiting, or closed
            except OSError:
                cut = now - started
                break
    finally:
        sock.close()
    return peak, cut, sent


def test_a_client_that_never_reads_costs_little_and_is_cut(tmp_path: Path) -> None:
    http_port, admin = free_port(), free_port()
    config = {"listen": loopback_listeners(http_port, admin), "workers": 1,
              "rules": [docker_rule(DOMAIN, "registry.example.test")],
              "events": jsonl_events(tmp_path, 0.2), "limits": {"client_timeout": 3}}
    log = tmp_path / "twistd.log"
    process = start_twistd(write_config(tmp_path, config), log)
    try:
        wait_ready(admin, process, log)
        warm = (NEXT.replace(b"\r\n\r\n", b"\r\nUser-Agent: docker/27.0\r\n\r\n") * 2000
                + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert converse(http_port, warm).count(b" 307 ") == 2000
        first = rss_kib(process.pid)
        pipeline_without_reading(http_port, lambda: rss_kib(process.pid), 12)  # warms up too
        time.sleep(0.5)
        baseline = rss_kib(process.pid)
        peak, cut, sent = pipeline_without_reading(http_port, lambda: rss_kib(process.pid), 12)
        growth = peak - baseline
        print(f"non-reading client: sent {sent} bytes, RSS {baseline} KiB -> peak {peak} KiB "
              f"(+{growth} KiB; the first one from {first} KiB), cut after {cut} s")
        assert growth < 2048, f"RSS grew by {growth} KiB"
        assert cut is not None and 2.5 < cut < 7, f"cut after {cut} s (timeout 3 s)"
        assert open_connections(admin) == 0
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(15)


REFUSED = [
    (b"GET / HTTP/1.1\r\nHost: cr.example.test\r\nHost: other.test\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: caf\u00e9.test\r\n\r\n".encode(), 400),
    (b"OPTIONS * HTTP/1.1\r\nHost: cr.example.test\r\n\r\n", 400),
    (f"GET {MANIFEST} HTTP/1.1\r\n\r\n".encode(), 400),
    (b"GET / HTTP/1.1\r\nHost: cr.example.test\r\nBad Header: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: cr.example.test\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: cr.example.test\r\nContent-Length: 99999\r\n\r\n", 413),
    (b"GET http://cr.example.test HTTP/1.1\r\nHost: cr.example.test\r\nConnection: Upgrade\r\n"
     b"Upgrade: x\r\nContent-Length: 3\r\n\r\nabc", 400),
]


@pytest_twisted.inlineCallbacks
def test_every_refusal_closes_and_nothing_pipelined_behind_it_is_served(tmp_path: Path) -> Any:
    upstream = yield start_fake_upstream(200, {"Content-Type": "text/plain"}, b"secret")
    gateway = yield start_gateway(tmp_path, proxying_config(tmp_path, upstream.url))
    try:
        for refused, status in REFUSED:
            answer = yield threads.deferToThread(converse, gateway.port, refused + NEXT)
            statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
            assert statuses == [str(status).encode()], (refused[:60], answer[:300])
            assert b"\r\nConnection: close\r\n" in answer, refused[:60]
        alone = NEXT.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        served = yield threads.deferToThread(converse, gateway.port, alone)
        assert served.startswith(b"HTTP/1.1 200 ")
        assert len(upstream.received) == 1, "only the request sent on its own was forwarded"
    finally:
        yield gateway.stop()
        yield upstream.port.stopListening()


def wait_closed(sock: socket.socket, keep_alive: bytes, seconds: float) -> float | None:
    """Send ``keep_alive`` every 0.25 s for up to ``seconds``; when the gateway closed the
    connection (seconds after the start), else None."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            sock.sendall(keep_alive)
        except OSError:
            return time.monotonic() - started
        if select.select([sock], [], [], 0.25)[0]:
            try:
                if not sock.recv(65536):
                    return time.monotonic() - started
            except OSError:
                return time.monotonic() - started
    return None


def empty_lines_before_and_between_requests(port: int) -> tuple[float | None, float | None]:
    """How long a connection sending only CRLFs stays open: before any request, and after
    one answered request."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as fresh, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as used:
        used.sendall(NEXT.replace(b"Host", b"User-Agent: docker/27.0\r\nHost"))
        assert used.recv(65536).startswith(b"HTTP/1.1 307 ")
        results: list[float | None] = [None, None]
        waits = [threading.Thread(target=lambda i=i, s=s: results.__setitem__(
            i, wait_closed(s, b"\r\n", 5))) for i, s in enumerate((fresh, used))]
        for wait in waits:
            wait.start()
        for wait in waits:
            wait.join()
        return results[0], results[1]


@pytest_twisted.inlineCallbacks
def test_empty_lines_do_not_keep_a_connection_open(tmp_path: Path) -> Any:
    config = gateway_config(tmp_path, rules=[docker_rule(DOMAIN, "registry.example.test")],
                            limits={"client_timeout": 1})
    gateway = yield start_gateway(tmp_path, config)
    try:
        before, between = yield threads.deferToThread(empty_lines_before_and_between_requests,
                                                      gateway.port)
    finally:
        yield gateway.stop()
    assert before is not None and before < 2.5
    assert between is not None and between < 2.5


def rejected() -> float:
    return metrics.REGISTRY.get_sample_value("scarfgw_connections_rejected_total",
                                             {"listener": "http"}) or 0.0


def closed_at_once(port: int) -> bool:
    """A new connection that sends nothing is closed by the gateway within a second."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        try:
            return sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


@pytest_twisted.inlineCallbacks
def test_connections_beyond_max_connections_are_closed_at_once(tmp_path: Path) -> Any:
    config = gateway_config(tmp_path, rules=[docker_rule(DOMAIN, "registry.example.test")],
                            limits={"max_connections": 3})
    gateway = yield start_gateway(tmp_path, config)
    factory = gateway.service.factories[0]
    held = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(3)]
    try:
        for _ in range(100):
            if len(factory.channels) == 3:
                break
            yield threads.deferToThread(time.sleep, 0.02)
        before = rejected()
        assert (yield threads.deferToThread(closed_at_once, gateway.port))
        assert rejected() == before + 1
        held.pop().close()
        yield threads.deferToThread(time.sleep, 0.2)
        answer = yield raw_request(gateway.port, "GET", MANIFEST,
                                   [("Host", DOMAIN), ("User-Agent", "docker/27.0")])
        assert answer.status == 307
    finally:
        for sock in held:
            sock.close()
        yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_the_https_listener_closes_connections_beyond_max_connections_too(
        tmp_path: Path) -> Any:
    config = gateway_config(
        tmp_path, rules=[docker_rule(DOMAIN, "registry.example.test")],
        limits={"max_connections": 1},
        listen={"http": "tcp:0:interface=127.0.0.1", "https": "tcp:0:interface=127.0.0.1",
                "admin": "tcp:0:interface=127.0.0.1", "insights": None},
        tls={"storage": str(tmp_path / "tls"), "acme": {"directory": "http://127.0.0.1:9/d"},
             "verification": {"mode": "none"}})
    gateway = yield start_gateway(tmp_path, config)
    https = int(gateway.service.ports["https"].getHost().port)
    factory = next(f for f in gateway.service.factories if f.tls)
    held = socket.create_connection(("127.0.0.1", https))
    try:
        for _ in range(100):
            if factory.channels:
                break
            yield threads.deferToThread(time.sleep, 0.02)
        assert (yield threads.deferToThread(closed_at_once, https))
        assert not (yield threads.deferToThread(closed_at_once, gateway.port))
    finally:
        held.close()
        yield gateway.stop()


@pytest_twisted.inlineCallbacks
def test_dot_segments_never_leave_the_rule_path(tmp_path: Path) -> Any:
    upstream = yield start_fake_upstream(200, {"Content-Type": "application/json"}, b"{}")
    config = proxying_config(tmp_path, upstream.url)
    config["rules"].append(FILES)
    gateway = yield start_gateway(tmp_path, config)
    files = [("Host", "dl.example.test")]
    try:
        for escape in ("/dl/1.0/%2e%2e/%2e%2e/attacker/evil.tgz", "/dl/1.0/../../attacker/x",
                       "/dl/1.0/%2E./x.tgz", "/dl/1.0/.%2e%2fattacker%2fx.tgz"):
            refused = yield raw_request(gateway.port, "GET", escape, files)
            assert refused.status == 404, escape
            assert refused.header("location") is None
        fine = yield raw_request(gateway.port, "GET", "/dl/1.0/a..b/x.tgz", files)
        assert fine.header("location") == "https://files.example.test/1.0/a..b/x.tgz"
        for escape in ("/v2/library/hello/manifests/../../../private/x/manifests/latest",
                       "/v2/library/hello/manifests/%2e%2e/%2E%2E/%2e%2e/private/x/manifests/1",
                       "/v2/library/hello/blobs/..%2f..%2f..%2fprivate%2fx%2fblobs%2fsha256:1"):
            refused = yield raw_request(gateway.port, "GET", escape, [("Host", DOMAIN)])
            assert refused.status == 400, escape
            assert b"NAME_INVALID" in refused.body
        fetched = yield raw_request(gateway.port, "GET", MANIFEST, [("Host", DOMAIN)])
        assert fetched.status == 200
    finally:
        yield gateway.stop()
        yield upstream.port.stopListening()
    assert [request.path for request in upstream.received] == [MANIFEST]
    assert {(event["kind"], event.get("image")) for event in gateway.events()} == {
        ("file", None), ("docker", "library/hello")}
    assert [event["path"] for event in gateway.events() if event["kind"] == "docker"] == [MANIFEST]


@pytest_twisted.inlineCallbacks
def test_deeply_nested_json_gets_400_and_no_traceback(tmp_path: Path) -> Any:
    rules = [{"type": "telemetry-v1", "domain": "t.example.test", "incoming-path": "/events",
              "package-id": "t1", "max-body-bytes": 65536},
             {"type": "scarf-js-v1", "domain": "t.example.test"}]
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=rules))
    deep = b"[" * 2000 + b"]" * 2000
    host = [("Host", "t.example.test")]
    with Logged() as logged:
        telemetry = yield raw_request(gateway.port, "POST", "/events", host, deep)
        scarf_js = yield raw_request(gateway.port, "POST", "/package-event/install", host,
                                     b'{"a": ' + deep + b"}")
        shallow = yield raw_request(gateway.port, "POST", "/events", host,
                                    b'{"a": ' + b"[" * 60 + b"]" * 60 + b"}")
        yield gateway.stop()
    assert (telemetry.status, scarf_js.status, shallow.status) == (400, 400, 200)
    assert telemetry.body == scarf_js.body == b"JSON nested deeper than 64 levels\n"
    assert logged.failures == []
    assert [event["kind"] for event in gateway.events()] == ["telemetry"]


def request_files(port: int, count: int, remove_at: int, folder: Path) -> list[int]:
    """GET /dl/1/<i> for i < count over keep-alive connections; after the answer to
    ``remove_at``, ``rm -rf`` ``folder``. Returns the numbers answered after the removal."""
    after: list[int] = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for number in range(count):
        connection.request("GET", f"/dl/1/{number}", headers={"Host": "dl.example.test"})
        response = connection.getresponse()
        response.read()
        assert response.status == 307
        if number == remove_at:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
        elif number > remove_at:
            after.append(number)
    connection.close()
    return after


@pytest_twisted.inlineCallbacks
def test_a_removed_jsonl_directory_is_recreated_and_nothing_is_lost(tmp_path: Path) -> Any:
    folder = tmp_path / "events"
    events = {"flush_interval": 0.01, "batch_size": 20, "spool_dir": str(tmp_path / "spool"),
              "sinks": [{"type": "jsonl", "path": str(folder / "events.jsonl")}]}
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=[FILES],
                                                           events=events))

    def written() -> float:
        return metrics.REGISTRY.get_sample_value("scarfgw_events_written_total",
                                                 {"sink": "jsonl"}) or 0.0

    before = written()
    after = yield threads.deferToThread(request_files, gateway.port, 1500, 500, folder)
    yield gateway.stop()
    recorded = [int(event["variables"]["path"]) for event in gateway.events()]
    assert set(after) <= set(recorded), f"{len(set(after) - set(recorded))} events lost"
    assert len(recorded) == len(set(recorded))
    assert written() - before == 1500


@pytest_twisted.inlineCallbacks
def test_forwarding_headers_reach_backends_only_from_trusted_proxies(tmp_path: Path) -> Any:
    upstream = yield start_fake_upstream(200, {"Content-Type": "application/json"}, b"{}")
    forged = [("Host", DOMAIN), ("X-Forwarded-Host", DOMAIN), ("X-Forwarded-Proto", "gopher"),
              ("Forwarded", "for=1.2.3.4;host=evil.test"), ("X-Real-IP", "1.2.3.4"),
              ("X-Forwarded-For", "1.2.3.4")]
    names = {"x-forwarded-host", "x-forwarded-proto", "forwarded", "x-real-ip"}
    for trusted in ([], ["127.0.0.0/8"]):
        folder = tmp_path / str(len(trusted))
        folder.mkdir()
        gateway = yield start_gateway(folder, proxying_config(folder, upstream.url,
                                                              trusted_proxies=trusted))
        answer = yield raw_request(gateway.port, "GET", MANIFEST, forged)
        yield gateway.stop()
        assert answer.status == 200
    untrusted, trusting = upstream.received
    yield upstream.port.stopListening()
    assert {name.lower() for name, _ in untrusted.headers} & names == set()
    assert dict((k.lower(), v) for k, v in untrusted.headers)["x-forwarded-for"] == "127.0.0.1"
    assert {name.lower() for name, _ in trusting.headers} >= names


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on 127.0.0.1:``port`` (``ss``'s Send-Q)."""
    shown = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                           text=True, check=True).stdout.split()
    return int(shown[2])


@pytest_twisted.inlineCallbacks
def test_a_single_process_listens_with_a_large_backlog(tmp_path: Path) -> Any:
    rules = [docker_rule(DOMAIN, "registry.example.test")]
    default = yield start_gateway(tmp_path, gateway_config(tmp_path, rules=rules, workers=1))
    assert listen_backlog(default.port) == 1024
    yield default.stop()
    configured = tmp_path / "configured"
    configured.mkdir()
    larger = yield start_gateway(configured, gateway_config(
        configured, rules=rules, workers=1, limits={"listen_backlog": 2048}))
    assert listen_backlog(larger.port) == 2048
    yield larger.stop()


class Stalling(protocol.Protocol):
    """Answers headers and the first 10 of 100 body bytes, then goes silent."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")


@pytest_twisted.inlineCallbacks
def test_a_proxied_body_cut_short_is_recorded_as_incomplete(tmp_path: Path) -> Any:
    stalling = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(Stalling))
    whole = yield start_fake_upstream(200, {"Content-Type": "application/json"}, b"{}" * 50)
    rules = [PROXIED, {**PROXIED, "domain": "stall.example.test", "registry": "stall.test"}]
    upstreams = {"registry.example.test": whole.url,
                 "stall.test": f"http://127.0.0.1:{stalling.getHost().port}"}
    gateway = yield start_gateway(tmp_path, gateway_config(
        tmp_path, rules=rules, proxy={"upstreams": upstreams, "response_timeout": 0.5}))
    cut = yield raw_request(gateway.port, "GET", MANIFEST, [("Host", "stall.example.test")])
    full = yield raw_request(gateway.port, "GET", MANIFEST, [("Host", DOMAIN)])
    yield gateway.stop()
    yield stalling.stopListening()
    yield whole.port.stopListening()
    assert (cut.status, len(cut.body)) == (200, 10)
    assert (full.status, len(full.body)) == (200, 100)
    by_domain = {event["domain"]: event for event in gateway.events()}
    assert by_domain["stall.example.test"]["complete"] is False
    assert by_domain["stall.example.test"]["status"] == 200
    assert "complete" not in by_domain[DOMAIN]


NASTY_RULES = [
    PROXIED, FILES,
    {"type": "docker-v2", "domain": "cr2.example.test", "pattern": "*", "registry": "127.0.0.1:9",
     "rule-id": "r"},
    {"type": "file-v2", "domain": "f2.example.test", "incoming-path": "^/(?<name>[^/]+)/(?<v>.*)$",
     "outgoing-url": "https://x.test/{name}/{+v}", "package-id": "f2"},
    {"type": "python-v1", "domain": "py.example.test", "package-name": "tool",
     "file-name": "tool-1.0-py3-none-any.whl", "version": "1.0",
     "backend-url": "https://files.test/tool-1.0-py3-none-any.whl", "package-id": "p"},
    {"type": "telemetry-v1", "domain": "t.example.test", "incoming-path": "/e", "package-id": "t",
     "max-body-bytes": 65536},
    {"type": "scarf-js-v1", "domain": "t.example.test"},
    {"type": "pixel-v1", "domain": "t.example.test", "content-type": "image/png",
     "image-base64": "iVBORw0KGgo="},
    {"type": "catch-all-v1", "domain": "c.example.test", "redirect-target-domain": "x.test",
     "package-id": "c"},
]
NASTY_HOSTS = [DOMAIN, "dl.example.test", "cr2.example.test", "f2.example.test",
               "py.example.test", "t.example.test", "c.example.test", "[::1]:80", "a:b:c",
               "x" * 300, "CR.EXAMPLE.TEST."]
NASTY_PATHS = ["/", "/v2/", "/v2/_catalog", MANIFEST, "/v2/token/abc", "/simple/", "/simple/tool/",
               "/simple/%ff/", "/e", "/a.png?x-pxid=%ff&x-pxid", "/package-event/install/%ff",
               "/dl/%ff/%c3%28?%zz=%&&==", "/%ff/%fe", "/" + "%41" * 3000, "/" + "{" * 10,
               "/v2/" + "a/" * 500 + "manifests/x", "/?" + "&" * 5000, "/x?" + "a=%ff" * 200,
               "/.well-known/acme-challenge/%ff", "/dl/1/..%5c..%5cx"]
NASTY_BODIES = [b"", b"{", b"[" * 5000, b"\xff\xfe", b'{"a":' * 100, b"1e999999", b'"\\ud800"',
                b'{"a": NaN}', b"{}" * 5000]
NASTY_HEADERS = [b"", b"User-Agent: docker/27.0\r\n", b"Authorization: Basic %%%\r\n",
                 b"Authorization: Bearer \xff\r\n", b"DNT: \xff\r\n", b"Referer: \xff\r\n",
                 b"Accept: application/vnd.pypi.simple.v1+json;q=\xff\r\n",
                 b"X-Forwarded-For: \xff, ::::, 1.2.3.4\r\nX-Forwarded-Host: \xff\r\n"]


def nasty_requests() -> list[bytes]:
    """Every host with every path, methods, bodies and headers rotating through their lists."""
    requests = []
    for number, (host, path) in enumerate(
            (host, path) for host in NASTY_HOSTS for path in NASTY_PATHS):
        method = ("GET", "POST", "HEAD", "PUT", "FOO")[number % 5]
        body = NASTY_BODIES[number % len(NASTY_BODIES)]
        headers = NASTY_HEADERS[number % len(NASTY_HEADERS)]
        requests.append(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1")
                        + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return requests


def send_each(port: int, requests: list[bytes]) -> list[int]:
    """Each request on its own connection: the status codes answered."""
    statuses = []
    for request in requests:
        answer = converse(port, request.replace(b"\r\n", b"\r\nConnection: close\r\n", 1))
        statuses.append(int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else 0)
    return statuses


@pytest_twisted.inlineCallbacks
def test_no_client_input_produces_a_traceback(tmp_path: Path) -> Any:
    config = gateway_config(tmp_path, rules=NASTY_RULES,
                            proxy={"connect_timeout": 0.5, "response_timeout": 1,
                                   "upstreams": {"registry.example.test": "http://127.0.0.1:9"}})
    gateway = yield start_gateway(tmp_path, config)
    with Logged() as logged:
        statuses = yield threads.deferToThread(send_each, gateway.port, nasty_requests())
        yield gateway.stop()
    assert logged.failures == []
    assert 0 not in statuses and 500 not in statuses


def read_then_leave(port: int) -> bytes:
    """GET the stalling download, read its head and first bytes, then close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {MANIFEST} HTTP/1.1\r\nHost: stall.example.test\r\n\r\n".encode())
        received = b""
        while not received.endswith(b"0123456789"):
            received += sock.recv(65536)
        return received


@pytest_twisted.inlineCallbacks
def test_a_client_leaving_mid_body_is_recorded_as_incomplete(tmp_path: Path) -> Any:
    stalling = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(Stalling))
    rule = {**PROXIED, "domain": "stall.example.test", "registry": "stall.test"}
    upstreams = {"stall.test": f"http://127.0.0.1:{stalling.getHost().port}"}
    gateway = yield start_gateway(tmp_path, gateway_config(
        tmp_path, rules=[rule], proxy={"upstreams": upstreams, "response_timeout": 30}))
    started = time.monotonic()
    yield threads.deferToThread(read_then_leave, gateway.port)
    for _ in range(100):
        if gateway.service.gateway.in_flight == 0:
            break
        yield threads.deferToThread(time.sleep, 0.02)
    yield gateway.stop()
    yield stalling.stopListening()
    assert time.monotonic() - started < 10, "recorded when the client left, not at the timeout"
    [event] = gateway.events()
    assert (event["status"], event["complete"]) == (200, False)
