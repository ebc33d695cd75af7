"""What a :class:`~scarfgw.http.channel.GatewayRequest` needs of the connection it arrived
on: the one interface behind which the real channel (:class:`GatewayChannel`) and the
in-memory fake (:mod:`scarfgw.http.fake`) answer requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IPushProducer

if TYPE_CHECKING:
    from scarfgw.http.channel import GatewayRequest


class DateSource(Protocol):
    """The ``Date`` header line of responses."""

    def current(self) -> bytes:
        """``Date: ...\\r\\n`` for now."""


class ListenerSettings(Protocol):
    """What a request needs of its listener."""

    @property
    def tls(self) -> bool:
        """True on the https listener."""

    @property
    def max_body_bytes(self) -> int:
        """The most body bytes a request may carry."""

    @property
    def date(self) -> DateSource:
        """The ``Date`` header source."""


class Connection(Protocol):
    """One client connection, as the requests it carries see it."""

    @property
    def peer_host(self) -> str | None:
        """The client's address (``None`` where the transport has none)."""

    @property
    def factory(self) -> ListenerSettings:
        """The listener the connection arrived on."""

    @property
    def transport(self) -> Any:
        """The transport: a producer can be registered on it, and it can be aborted."""

    def send(self, data: bytes) -> None:
        """Write response bytes, in order."""

    def attach_body_producer(self, producer: IPushProducer | None) -> None:
        """Pause ``producer`` (a streamed body) while the output waits; ``None`` detaches."""

    def last_response(self, request: GatewayRequest) -> bool:
        """True when the connection closes after ``request``'s response."""

    def request_done(self, request: GatewayRequest) -> None:
        """``request``'s response is complete."""
