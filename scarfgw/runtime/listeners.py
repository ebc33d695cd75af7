"""The listening sockets of one process, as a service.

Sockets are bound in ``privilegedStartService`` (before twistd drops privileges): from the
endpoint string, or, in a primary with workers, as one ``SO_REUSEPORT`` socket per process
(the primary serves the first and keeps the others for its workers), or, in a worker, by
adopting the sockets it inherited. A listener that cannot be bound stops the process at once
with exit status 1 and one line naming the listener, the endpoint and the reason.
Stopping the service stops accepting; connections already open are left to the drain.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger
from twisted.python.failure import Failure

from scarfgw.http.channel import GatewayFactory
from scarfgw.http.connection import GatewayPort
from scarfgw.http.endpoints import parse_tcp_endpoint, with_backlog
from scarfgw.runtime.endpoints import reuseport_sockets
from scarfgw.runtime.workers import SharedSocket
from scarfgw.tls.transport import TLSServerFactory

log = Logger()


@dataclass(frozen=True)
class Listener:
    """One listener: its name (``http``, ``https``, ``admin``, ``insights``), endpoint string,
    factory, and the listen backlog a ``tcp:`` endpoint gets unless its string names one."""

    name: str
    spec: str
    factory: Any
    backlog: int | None = None

    @property
    def bind_spec(self) -> str:
        """The endpoint string bound: :attr:`spec` with the backlog added."""
        return self.spec if self.backlog is None else with_backlog(self.spec, self.backlog)


class CannotListen(SystemExit):
    """A listener could not be bound: the process exits 1 with this one-line message (on
    stderr, which twistd also sends to its log)."""

    def __init__(self, listener: Listener, reason: object) -> None:
        super().__init__(f"scarfgw: cannot listen for {listener.name} on {listener.spec!r}: "
                         f"{reason}")


def _gateway_port(reactor: Any, factory: Any) -> bool:
    """True when ``factory``'s connections get a :class:`GatewayPort` (the gateway's http and
    https listeners on a reactor with file descriptors; admin and insights keep Twisted's)."""
    return (isinstance(reactor, PosixReactorBase)
            and isinstance(factory, GatewayFactory | TLSServerFactory))


def _os_error(error: BaseException) -> OSError:
    """The OSError behind a failure to listen (a CannotListenError's cause)."""
    cause = getattr(error, "socketError", None)
    return cause if isinstance(cause, OSError) else OSError(str(error))


def _start(port: GatewayPort) -> GatewayPort:
    """Start ``port`` listening; OSError if it cannot."""
    try:
        port.startListening()
    except CannotListenError as exc:
        raise _os_error(exc) from None
    return port


class Listeners(Service):
    """Binds ``listeners``; ``inherited`` (a worker's) are adopted instead, and with
    ``share_with`` > 1 the tcp ones are bound once per process with ``SO_REUSEPORT``.
    ``bound(name, port)`` is told of each listening port."""

    def __init__(self, reactor: Any, listeners: list[Listener],
                 inherited: Mapping[str, SharedSocket] | None = None, share_with: int = 1,
                 bound: Callable[[str, IListeningPort], None] | None = None) -> None:
        self.reactor = reactor
        self.listeners = listeners
        self.inherited = dict(inherited or {})
        self.share_with = share_with
        self.bound = bound
        self.ports: dict[str, IListeningPort] = {}
        self.kept: dict[str, list[socket.socket]] = {}
        """Listener -> the sockets bound for workers 1..n-1 (primary with workers)."""

    def privilegedStartService(self) -> None:
        """Bind every listener now (raises :class:`CannotListen`)."""
        super().privilegedStartService()
        self._bind()

    def startService(self) -> None:
        """Bind, unless ``privilegedStartService`` did already."""
        super().startService()
        self._bind()

    def _bind(self) -> None:
        for listener in self.listeners:
            if listener.name not in self.ports:
                self._listen(listener)

    def _listen(self, listener: Listener) -> None:
        try:
            shared = self.inherited.get(listener.name)
            if shared is None and self.share_with > 1:
                own, *others = reuseport_sockets(listener.bind_spec, self.share_with)
                self.kept[listener.name] = others
                shared = SharedSocket(own.fileno(), own.family)
                port = self._adopt(shared, listener.factory)
                own.close()
            elif shared is not None:
                port = self._adopt(shared, listener.factory)
                os.close(shared.fileno)
            else:
                port = self._listen_now(listener)
        except OSError as exc:
            raise CannotListen(listener, exc.strerror or exc) from None
        self.ports[listener.name] = port
        log.info("listening for {name} on {address}", name=listener.name,
                 address=port.getHost())
        if self.bound is not None:
            self.bound(listener.name, port)

    def _adopt(self, shared: SharedSocket, factory: Any) -> IListeningPort:
        if _gateway_port(self.reactor, factory):
            return _start(GatewayPort._fromListeningDescriptor(
                self.reactor, shared.fileno, shared.family, factory))
        port: IListeningPort = self.reactor.adoptStreamPort(shared.fileno, shared.family,
                                                            factory)
        return port

    def _listen_now(self, listener: Listener) -> IListeningPort:
        """Listen on the endpoint string; the endpoints of the reactor bind synchronously."""
        if _gateway_port(self.reactor, listener.factory):
            try:
                address = parse_tcp_endpoint(listener.bind_spec)
            except ValueError:  # not tcp:PORT[:interface=IF][:backlog=N]: the endpoint's port
                pass
            else:
                return _start(GatewayPort(address.port, listener.factory, address.backlog,
                                          address.interface, self.reactor))
        outcome: list[IListeningPort | Failure] = []
        listening = serverFromString(self.reactor, listener.bind_spec).listen(listener.factory)
        listening.addBoth(outcome.append)
        if not outcome:
            raise OSError(f"{listener.spec} did not bind at once")
        result = outcome[0]
        if isinstance(result, Failure):
            raise _os_error(result.value or Exception(str(result)))
        return result

    def worker_sockets(self) -> dict[int, dict[str, SharedSocket]]:
        """Worker index (1..n-1) -> listener -> the socket kept for it."""
        return {index: {name: SharedSocket(sockets[index - 1].fileno(), sockets[index - 1].family)
                        for name, sockets in self.kept.items()}
                for index in range(1, self.share_with)}

    def cover(self, index: int) -> Callable[[], None]:
        """Serve worker ``index``'s sockets here until the returned function is called."""
        factories = {listener.name: listener.factory for listener in self.listeners}
        ports = [self._adopt(shared, factories[name])
                 for name, shared in self.worker_sockets()[index].items()]

        def uncover() -> None:
            for port in ports:
                port.stopListening()

        return uncover

    def stopService(self) -> defer.Deferred[Any]:
        """Stop accepting; the sockets kept for workers are closed too."""
        super().stopService()
        stopped = defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in self.ports.values()],
            consumeErrors=True)
        for sockets in self.kept.values():
            for sock in sockets:
                sock.close()
        self.kept.clear()
        return stopped
