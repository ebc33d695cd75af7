"""GatewayReactor: sockets are served without Twisted's log context, errors still end them."""

from __future__ import annotations

import socket
from typing import cast

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, globalLogPublisher

from scarfgw.runtime.reactor import GatewayReactor, install_unless_chosen


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        if data == b"boom":
            raise ValueError("handler failed")
        assert self.transport is not None
        self.transport.write(data.upper())


def _serve(reactor: GatewayReactor) -> int:
    port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    return port.getHost().port


def _iterate_until(reactor: GatewayReactor, client: socket.socket) -> bytes:
    for _ in range(200):
        reactor.iterate(0.01)
        try:
            return client.recv(100)
        except BlockingIOError:
            continue
    raise AssertionError("no answer")


def test_data_flows_both_ways_and_timers_fire() -> None:
    reactor = GatewayReactor()
    fired: list[bool] = []
    reactor.callLater(0, fired.append, True)
    client = socket.create_connection(("127.0.0.1", _serve(reactor)))
    client.setblocking(False)
    client.sendall(b"hello")
    assert _iterate_until(reactor, client) == b"HELLO"
    assert fired == [True]
    client.close()


def test_a_failing_handler_is_logged_and_its_connection_closed() -> None:
    reactor = GatewayReactor()
    logged: list[dict[str, object]] = []
    observer = cast(ILogObserver, logged.append)
    globalLogPublisher.addObserver(observer)
    try:
        client = socket.create_connection(("127.0.0.1", _serve(reactor)))
        client.setblocking(False)
        client.sendall(b"boom")
        assert _iterate_until(reactor, client) == b"", "the connection is closed"
    finally:
        globalLogPublisher.removeObserver(observer)
    failures = [event["failure"] for event in logged if event.get("isError")]
    assert any(failure.check(ValueError) for failure in failures)  # type: ignore[attr-defined]
    client.close()


def test_install_keeps_an_installed_reactor() -> None:
    from twisted.internet import reactor as installed

    install_unless_chosen()
    from twisted.internet import reactor as after

    assert after is installed
    assert not isinstance(after, GatewayReactor)
