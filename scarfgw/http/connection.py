"""The TCP port and connections of the gateway's http and https listeners: Twisted's, with
a cheaper accept and close.

Per connection, Twisted's ``tcp.Port`` accepts through ``socket.accept`` (two enum
conversions), a generator and a log-buffering context, and builds the peer's address twice
(for the factory and again for ``getPeer``); ``tcp.Server`` formats two log strings (asking
the protocol for its log prefix through a zope interface check); and closing takes two
steps: ``loseConnection`` swaps the read registration for a write one (two ``epoll_ctl``
calls), and on the reactor's next turn ``doWrite`` sends zero bytes before the socket is
unregistered and closed. For a client that gets one answer per connection (``Connection:
close``, most TLS handshakes) that was a sixth of the gateway's CPU time.

:class:`GatewayPort` accepts on the raw socket and builds the peer's address once;
:class:`GatewayConnection` formats its log strings only when asked, and when
``loseConnection`` finds nothing queued and no producer registered it closes at once: the
socket is unregistered, shut down and closed, and the protocol's ``connectionLost`` runs
before ``loseConnection`` returns (as Twisted's own ``loseConnection`` does for a connection
whose writing side is already shut). With output queued or a producer registered it closes
as Twisted does, once the output is sent. Accept errors other than "nothing pending"
(``EMFILE`` and the like) are left to Twisted's accept loop, which handles and logs them.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import address, tcp
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger

_log = Logger(namespace=__name__)
_NUMERIC: Any = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV


class GatewayConnection(tcp.Server):
    """A server connection that closes at once when nothing is left to send; ``peer`` is
    the client's address, if the port built it already."""

    def __init__(self, sock: socket.socket, protocol: Any, client: tuple[Any, ...],
                 server: Any, sessionno: int, reactor: Any, peer: IAddress | None = None
                 ) -> None:
        tcp.Connection.__init__(self, sock, protocol, reactor)
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        self.peer = peer
        self._protocol_name = type(protocol).__name__
        self.startReading()
        self.connected = 1

    def getPeer(self) -> Any:
        """The client's address (built once)."""
        if self.peer is None:
            client: Any = self.client
            self.peer = self._addressType("TCP", *client)
        return self.peer

    def logPrefix(self) -> str:
        """``<protocol class>,<session number>,<peer host>``, as Twisted's."""
        return f"{self._protocol_name},{self.sessionno},{self.hostname}"

    def __repr__(self) -> str:
        port = self.server._realPortNumber if self.server is not None else None
        return f"<{self._protocol_name} #{self.sessionno} on {port}>"

    def loseConnection(self) -> None:
        """Close now if nothing is queued and no producer is registered; otherwise once the
        queued output is sent (Twisted's way)."""
        if (self.connected and not self.disconnecting and self.producer is None
                and not self._tempDataLen and self.offset == len(self.dataBuffer)
                and not self._writeDisconnecting):
            self._close_now()
            return
        super().loseConnection()

    def _close_now(self) -> None:
        """Unregister, shut down and close the socket, then tell the protocol: Twisted's
        ``connectionLost`` for a connection without a producer or queued output, without
        its failure-type check (the reason is known: a clean close)."""
        self.disconnecting = 1
        self.disconnected = 1
        self.connected = 0
        reactor = self.reactor
        reactor.removeReader(self)
        reactor.removeWriter(self)
        self._closeSocket(True)
        protocol = self.protocol
        del self.protocol
        del self.socket
        del self.fileno
        protocol.connectionLost(connectionDone)


class GatewayPort(tcp.Port):
    """A listening TCP port whose connections are :class:`GatewayConnection`s."""

    transport = GatewayConnection

    def doRead(self) -> None:
        """Accept the pending connections (at most ``numberAccepts``, which grows while
        there are more, as in Twisted); an error is logged (the connection it came from is
        closed if it has no protocol yet) and the port goes on listening."""
        try:
            self._accept_pending()
        except BaseException:
            _log.failure("cannot accept a connection on {port}", port=self._realPortNumber)

    def _accept_pending(self) -> None:
        listener: Any = self.socket
        factory = self.factory
        assert factory is not None
        family = self.addressFamily
        accepted = 0
        for _ in range(self.numberAccepts):
            try:
                fd, client = listener._accept()
            except BlockingIOError:
                break
            except OSError:
                super().doRead()  # EMFILE, EPERM...: Twisted's recovery and logging
                return
            accepted += 1
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            if len(client) == 4:  # IPv6: the scope ID into the host, as Twisted does
                client = (socket.getnameinfo(client, _NUMERIC)[0], *client[1:])
            peer = self._addressType("TCP", *client)
            try:
                protocol = factory.buildProtocol(peer)
            except BaseException:
                sock.close()
                raise
            if protocol is None:
                sock.close()
                continue
            session = self.sessionno
            self.sessionno = session + 1
            protocol.makeConnection(
                GatewayConnection(sock, protocol, client, self, session, self.reactor, peer))
        self.numberAccepts = (self.numberAccepts + 20 if accepted == self.numberAccepts
                              else max(1, accepted))
