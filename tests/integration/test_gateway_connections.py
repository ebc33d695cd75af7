"""The gateway listeners' own TCP port and connections (scarfgw.http.connection) through
real sockets: a listener bound by the Listeners service accepts them; a connection closes at
once when nothing is queued and only after its output otherwise; half-close, abort,
max_connections, the drain, addresses and accept failures behave as with Twisted's."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from zope.interface import provider

from scarfgw.http.channel import GatewayFactory, GatewayRequest
from scarfgw.http.connection import GatewayConnection, GatewayPort
from scarfgw.runtime.listeners import Listener, Listeners

pytestmark = pytest.mark.integration

BIG = b"b" * (8 * 1024 * 1024)


class Answers:
    """The handler: ``/big`` gets BIG, ``/fail`` raises in buildProtocol next time, anything
    else a 307; it remembers each request's transport."""

    def __init__(self) -> None:
        self.transports: list[Any] = []

    def __call__(self, request: GatewayRequest) -> None:
        self.transports.append(request.transport)
        if request.uri == b"/big":
            request.respond(200, [(b"Content-Type", b"application/octet-stream")], BIG)
        else:
            request.respond(307, [(b"Location", b"https://registry.test/")])


@pytest.fixture
def served() -> Iterator[tuple[Listeners, GatewayFactory, Answers]]:
    answers = Answers()
    factory = GatewayFactory(answers, "http", 65536, reactor, max_connections=2)
    listeners = Listeners(reactor, [Listener("http", "tcp:0:interface=127.0.0.1", factory)])
    listeners.startService()
    yield listeners, factory, answers
    listeners.stopService()


def port_of(listeners: Listeners) -> int:
    address: Any = listeners.ports["http"].getHost()
    return int(address.port)


def request(path: str = "/", close: bool = True) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n").encode()


def read_all(sock: socket.socket, pause: float = 0.0) -> bytes:
    data = b""
    while chunk := sock.recv(262144):
        data += chunk
        if pause:
            time.sleep(pause)
    return data


def one_request(port: int, path: str = "/", half_close: bool = False,
                pause: float = 0.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(request(path))
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock, pause)


@pytest_twisted.inlineCallbacks
def test_a_closing_answer_ends_the_connection_at_once_with_the_peer_address(served):
    listeners, factory, answers = served
    assert isinstance(listeners.ports["http"], GatewayPort)
    answer = yield threads.deferToThread(one_request, port_of(listeners))
    assert answer.startswith(b"HTTP/1.1 307 ") and answer.endswith(b"\r\n\r\n")
    transport = answers.transports[0]
    assert isinstance(transport, GatewayConnection) and transport.disconnected
    peer = transport.getPeer()
    assert isinstance(peer, IPv4Address) and peer.host == "127.0.0.1" and peer.port > 0
    assert transport.getPeer() is peer
    assert not factory.channels, "uncounted when the answer was sent, not a turn later"
    assert "GatewayChannel" in transport.logPrefix() and "127.0.0.1" in transport.logPrefix()


def keep_alive(port: int) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request(close=False))
        first = sock.recv(65536)
        sock.sendall(request())
        return first, read_all(sock)


@pytest_twisted.inlineCallbacks
def test_keep_alive_connections_stay_open_between_requests(served):
    listeners, _, answers = served
    first, second = yield threads.deferToThread(keep_alive, port_of(listeners))
    assert first.startswith(b"HTTP/1.1 307 ") and b"Connection: close" not in first
    assert second.startswith(b"HTTP/1.1 307 ") and b"Connection: close" in second
    assert answers.transports[0] is answers.transports[1]


@pytest_twisted.inlineCallbacks
def test_a_large_answer_to_a_slow_reader_is_sent_whole_before_the_close(served):
    listeners, factory, _ = served
    answer = yield threads.deferToThread(one_request, port_of(listeners), "/big", False, 0.001)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == BIG
    assert not factory.channels


@pytest_twisted.inlineCallbacks
def test_a_client_that_half_closes_after_its_request_gets_the_answer(served):
    listeners, factory, _ = served
    answer = yield threads.deferToThread(one_request, port_of(listeners), "/", True)
    assert answer.startswith(b"HTTP/1.1 307 ")
    assert not factory.channels


def over_the_limit(port: int) -> tuple[bytes, bytes]:
    first = socket.create_connection(("127.0.0.1", port), timeout=10)
    second = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
            try:
                third.sendall(request())
                refused = read_all(third)
            except ConnectionResetError:  # closed with the request unread
                refused = b""
        first.sendall(request())
        return refused, read_all(first)
    finally:
        first.close()
        second.close()


@pytest_twisted.inlineCallbacks
def test_a_connection_over_max_connections_is_closed_at_once(served):
    listeners, factory, _ = served
    refused, answered = yield threads.deferToThread(over_the_limit, port_of(listeners))
    assert refused == b"" and answered.startswith(b"HTTP/1.1 307 ")
    assert factory.rejected._value.get() >= 1


def idle_then_drained(port: int, drain: Any) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request(close=False))
        sock.recv(65536)
        started = time.monotonic()
        threads.blockingCallFromThread(cast(Any, reactor), drain)
        return sock.recv(100), time.monotonic() - started


@pytest_twisted.inlineCallbacks
def test_the_drain_closes_idle_connections(served):
    listeners, factory, _ = served
    rest, took = yield threads.deferToThread(idle_then_drained, port_of(listeners),
                                             factory.close_idle)
    assert rest == b"" and took < 2
    assert not factory.channels


def tls_hello_on_plain_http(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        try:
            return read_all(sock)
        except ConnectionResetError:
            return b"reset"


@pytest_twisted.inlineCallbacks
def test_an_aborted_connection_ends_without_an_answer(served):
    listeners, factory, _ = served
    answer = yield threads.deferToThread(tls_hello_on_plain_http, port_of(listeners))
    assert answer in (b"", b"reset")
    for _ in range(100):
        if not factory.channels:
            break
        yield threads.deferToThread(time.sleep, 0.01)
    assert not factory.channels


@pytest_twisted.inlineCallbacks
def test_an_error_while_accepting_is_logged_and_the_port_keeps_listening(served):
    listeners, factory, _ = served
    failures: list[dict[str, Any]] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.critical and "accept" in event.get(
                "log_format", ""):
            failures.append(event)

    build = factory.buildProtocol
    calls: list[Any] = []

    def fail_once(addr: Any) -> Any:
        if not calls:
            calls.append(addr)
            raise RuntimeError("boom")
        return build(addr)

    factory.buildProtocol = fail_once
    globalLogPublisher.addObserver(observe)
    try:
        first = yield threads.deferToThread(tls_hello_on_plain_http, port_of(listeners))
        answer = yield threads.deferToThread(one_request, port_of(listeners))
    finally:
        globalLogPublisher.removeObserver(observe)
        del factory.buildProtocol
    assert len(failures) == 1 and isinstance(calls[0], IPv4Address)
    assert first in (b"", b"reset")
    assert answer.startswith(b"HTTP/1.1 307 ")


class FullProcess:
    """A listening socket whose fast accept fails with EMFILE; Twisted's accept loop (which
    the port falls back to) then finds nothing pending."""

    def __init__(self) -> None:
        self.fallbacks = 0

    def _accept(self) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    def accept(self) -> Any:
        self.fallbacks += 1
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")


def test_accept_errors_other_than_nothing_pending_go_to_twisteds_accept_loop():
    port = GatewayPort(0, GatewayFactory(Answers(), "http", 65536, reactor), 50, "127.0.0.1",
                       reactor)
    port.startListening()
    listening, full = port.socket, FullProcess()
    port.socket = full
    try:
        port.doRead()
    finally:
        port.socket = listening
        port.stopListening()
    assert full.fallbacks == 1
