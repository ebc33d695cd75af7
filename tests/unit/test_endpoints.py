"""Shared listening sockets: endpoint parsing and SO_REUSEPORT binding."""

from __future__ import annotations

import socket

import pytest

from scarfgw.http.endpoints import parse_tcp_endpoint
from scarfgw.runtime.endpoints import reuseport_sockets


def test_parse_tcp_endpoints() -> None:
    plain = parse_tcp_endpoint("tcp:8080")
    assert (plain.family, plain.interface, plain.port, plain.backlog) == (
        socket.AF_INET, "0.0.0.0", 8080, 1024)
    local = parse_tcp_endpoint("tcp:0:interface=127.0.0.1:backlog=50")
    assert (local.interface, local.port, local.backlog) == ("127.0.0.1", 0, 50)
    six = parse_tcp_endpoint("tcp6:port=443:interface=\\:\\:1")
    assert (six.family, six.interface, six.port) == (socket.AF_INET6, "::1", 443)


@pytest.mark.parametrize("spec", ["unix:/tmp/x", "ssl:443", "tcp:http", "tcp:80:foo=1"])
def test_unsharable_endpoints_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_tcp_endpoint(spec)


def test_sockets_share_one_port_and_all_accept() -> None:
    sockets = reuseport_sockets("tcp:0:interface=127.0.0.1", 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1
        [port] = ports
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        accepted = []
        for sock in sockets:
            sock.setblocking(True)
            sock.settimeout(0.2)
            count = 0
            try:
                while True:
                    sock.accept()[0].close()
                    count += 1
            except TimeoutError:
                accepted.append(count)
        assert sum(accepted) == 30
        assert all(accepted), f"the kernel spreads connections over every socket: {accepted}"
        for client in clients:
            client.close()
    finally:
        for sock in sockets:
            sock.close()
