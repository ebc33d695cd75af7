"""The gateway handler: Twisted request -> rules request view -> Decision -> response + events.

It never decides routing; the router of the current snapshot (:class:`Served`: the runtime's
:class:`~scarfgw.runtime.snapshot.Snapshot`, swapped in one reference on reload) does; the
snapshot is all the gateway reads of the configuration. Events are handed to the writer
after the response has finished.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

from twisted.logger import Logger
from twisted.python.failure import Failure

from scarfgw.analytics.event import build_event, new_request_id, suppressed_by_privacy
from scarfgw.analytics.geoip import GeoIP
from scarfgw.gateway.clientinfo import TrustedProxies, client_address, forwarded_chain
from scarfgw.gateway.packuments import Packuments
from scarfgw.gateway.proxy import CLIENT_CLOSED, StreamingProxy
from scarfgw.gateway.public import PublicSite
from scarfgw.http.channel import GatewayRequest
from scarfgw.ops import metrics
from scarfgw.ops.accesslog import AccessLog
from scarfgw.ops.logging import FailureLog
from scarfgw.rules.decision import Capture, Decision, Proxy, Redirect
from scarfgw.rules.request import Headers, RequestView, routing_host
from scarfgw.rules.router import Router
from scarfgw.tls.manager import TLSService

log: Final = Logger(namespace=__name__)  # compiled code has no frame to name it by
failures: Final = FailureLog(log)

ACME_CHALLENGE_PREFIX: Final = "/.well-known/acme-challenge/"
REGISTRY_API: Final = "/v2"
"""Paths served on plain HTTP even for domains with a certificate (registry clients that were
configured for plain HTTP do not follow a redirect to another port with their token)."""
_AUTHORITY: Final = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


class EventQueue(Protocol):
    """Where the gateway hands events (:class:`~scarfgw.analytics.writer.EventWriter`)."""

    def submit(self, event: dict[str, Any]) -> None:
        """Accept one event; never blocks and never raises."""


class Served(Protocol):
    """What the gateway reads of one configuration generation."""

    @property
    def router(self) -> Router:
        """Routes every request of the generation."""

    @property
    def trusted(self) -> TrustedProxies:
        """The peers whose forwarding headers are believed."""

    @property
    def forwarder(self) -> StreamingProxy:
        """Streams the Proxy decisions."""

    @property
    def packuments(self) -> Packuments:
        """Streams the Proxy decisions that fetch npm package documents."""

    @property
    def insights(self) -> PublicSite | None:
        """The insights site on its public domain, if any."""


SnapshotT = TypeVar("SnapshotT", bound=Served)


class BadRequest(Exception):
    """The request cannot be routed; the message is safe to show the client, and the
    connection closes after it (nothing pipelined behind it is read)."""


class RequestContext:
    """Per-request facts the shell needs after routing (for events, metrics and the proxy)."""

    __slots__ = ("chain", "client_ip", "forwarded_proto", "host_value", "peer", "secure",
                 "started", "trusted_peer", "view")

    def __init__(
        self, view: RequestView, client_ip: str | None, peer: str | None, chain: list[str],
        started: float, forwarded_proto: str | None, host_value: str | None, secure: bool,
        trusted_peer: bool,
    ) -> None:
        self.trusted_peer = trusted_peer
        """The peer is a trusted proxy: its forwarding headers are believed and passed on."""
        self.view = view
        self.client_ip = client_ip
        self.peer = peer
        self.chain = chain
        self.started = started
        self.forwarded_proto = forwarded_proto
        self.host_value = host_value
        self.secure = secure

    @property
    def forwarded_for(self) -> list[str]:
        """The X-Forwarded-For chain to pass on: trusted hops, then the peer."""
        return [*self.chain, self.peer] if self.peer is not None else self.chain

    @property
    def public_origin(self) -> str:
        """``scheme://host[:port]`` as the client addressed the gateway."""
        proto = self.forwarded_proto
        scheme = proto if proto in ("http", "https") else ("https" if self.secure else "http")
        authority = (self.host_value or "").strip()
        if not _AUTHORITY.match(authority):
            authority = self.view.host
        return f"{scheme}://{authority}"


class Gateway(Generic[SnapshotT]):
    """Answers gateway requests according to the current snapshot."""

    def __init__(self, snapshot: SnapshotT, events: EventQueue, clock: object,
                 tls: TLSService | None = None, https_port: int = 443,
                 geoip: GeoIP | None = None, access_log: AccessLog | None = None) -> None:
        self.enrich = geoip.lookup if geoip is not None else None
        self.access_log = access_log
        self.draining = False
        self.tls = tls
        self.https_port = https_port
        self.events = events
        self.now: Callable[[], float] = clock.seconds  # type: ignore[attr-defined]
        self.snapshot = snapshot
        self.in_flight = 0

    def use(self, snapshot: SnapshotT) -> None:
        """Serve new requests with ``snapshot`` (requests in flight keep theirs)."""
        self.snapshot = snapshot

    def handle(self, request: GatewayRequest) -> None:
        """Answer one request; never raises and never shows a traceback to the client."""
        started = self.now()
        self.in_flight += 1
        metrics.request_started()
        try:
            self._handle(request, started)
        except Exception:
            request_id = new_request_id()
            failures.record(Failure(), request_id, "answering {method} {uri!r} failed",
                            method=request.method, uri=request.uri[:200])
            if request.accounted:
                return
            if not (request.startedWriting or request.finished or request.disconnected):
                self._respond_plain(request, 500, f"internal error (request {request_id})",
                                    started)
                return
            request.abort()
            self._account(request, 500, "none", started)

    def _handle(self, request: GatewayRequest, started: float) -> None:
        if self.draining:
            request.close_connection()
        snapshot = self.snapshot
        try:
            context = self._context(request, started, snapshot.trusted)
        except BadRequest as exc:
            request.close_connection()
            self._respond_plain(request, 400, str(exc), started)
            return
        if request.body_too_large:
            limit = request.body_limit
            message = f"request body larger than {limit} bytes"
            self._respond_plain(request, 413, message, started)
            return
        if self.tls is not None and self._answered_for_tls(request, context):
            return
        insights = snapshot.insights
        if insights is not None and context.view.host == insights.domain:
            self._render(request, context, insights.decision, snapshot)
            return
        self._render(request, context, snapshot.router.route(context.view), snapshot)

    def _answered_for_tls(self, request: GatewayRequest, context: RequestContext) -> bool:
        """ACME HTTP-01 answers, and the 308 to https for domains that have a certificate."""
        assert self.tls is not None
        view = context.view
        if view.raw_path.startswith(ACME_CHALLENGE_PREFIX):
            answer = self.tls.http01_response(view.raw_path[len(ACME_CHALLENGE_PREFIX):])
            if answer is None:
                self._respond_plain(request, 404, "no such challenge", context.started)
            else:
                request.respond(200, [(b"Content-Type", b"application/octet-stream")], answer)
                self._account(request, 200, "acme", context.started)
            return True
        if request.isSecure() or context.forwarded_proto == "https":
            return False
        if view.raw_path == REGISTRY_API or view.raw_path.startswith(REGISTRY_API + "/"):
            return False
        if not self.tls.has_certificate(view.host):
            return False
        port = "" if self.https_port == 443 else f":{self.https_port}"
        location = f"https://{view.host}{port}{view.raw_path}{view.query_with_mark}"
        request.respond(308, [(b"Location", location.encode())])
        self._account(request, 308, "https", context.started)
        return True

    def _context(self, request: GatewayRequest, started: float, trusted: TrustedProxies
                 ) -> RequestContext:
        headers = Headers.from_pairs(request.header_pairs)
        peer = request.client_host
        hosts = headers.get_all("host")
        if len(hosts) > 1:
            raise BadRequest("more than one Host header")
        if not hosts and request.version == "1.1":
            raise BadRequest("HTTP/1.1 request without Host header")
        host_value = hosts[0] if hosts else None
        trusted_peer = peer in trusted
        if trusted_peer:
            chain = forwarded_chain(headers.get_all("x-forwarded-for"))
            host_value = headers.get("x-forwarded-host") or host_value
            proto = headers.get("x-forwarded-proto")
            client_ip = client_address(peer, chain, trusted)
        else:
            chain, proto, client_ip = [], None, peer
        # llhttp admits only visible ASCII in the target
        path, mark, query = request.uri.partition(b"?")
        if path[:1] != b"/":
            if b"://" not in path:
                raise BadRequest("request target must be a path or an absolute URL")
            authority_and_path = path.split(b"://", 1)[1]
            slash = authority_and_path.find(b"/")
            path = b"/" if slash == -1 else authority_and_path[slash:]
            # RFC 9112 3.2.2: an absolute-form target's authority replaces Host
            authority = authority_and_path[:slash if slash != -1 else None]
            host_value = authority.rpartition(b"@")[2].decode("ascii")
        host = routing_host(host_value or "")
        if not host.isascii():
            raise BadRequest("Host must be ASCII (use the IDNA form)")
        view = RequestView(request.method.decode("ascii"), host, path.decode("ascii"),
                           query.decode("ascii") if mark else None, headers, request.body)
        return RequestContext(view, client_ip, peer, chain, started, proto, host_value,
                              request.isSecure(), trusted_peer)

    def _render(self, request: GatewayRequest, context: RequestContext, decision: Decision,
                snapshot: Served) -> None:
        if isinstance(decision, Proxy):
            forward = (snapshot.forwarder.forward if decision.packument is None
                       else snapshot.packuments.forward)
            forward(
                request, context.view, decision, context.forwarded_for, context.public_origin,
                lambda status, complete: self._finished(request, context, decision, status,
                                                        complete=complete),
                context.trusted_peer,
            )
            return
        if isinstance(decision, Redirect):
            request.respond(decision.status, [(b"Location", decision.location.encode())])
            self._finished(request, context, decision, decision.status)
            return
        if decision.captures_before:
            self._record(request, context, decision.captures, decision.status)
        request.respond(
            decision.status,
            [(name.encode("latin-1"), value.encode()) for name, value in decision.headers],
            decision.body,
        )
        self._finished(request, context, decision, decision.status,
                       recorded=decision.captures_before)

    def _finished(self, request: GatewayRequest, context: RequestContext, decision: Decision,
                  status: int, recorded: bool = False, complete: bool = True) -> None:
        self._account(request, status, decision.kind, context.started, context)
        if not recorded and status != CLIENT_CLOSED:
            self._record(request, context, decision.captures, status, complete)

    def _record(self, request: GatewayRequest, context: RequestContext,
                captures: Sequence[Capture], status: int, complete: bool = True) -> None:
        if not captures:
            return
        view = context.view
        if suppressed_by_privacy(view.header("dnt"), view.header("sec-gpc")):
            return
        request_id = new_request_id()
        for capture in captures:
            self.events.submit(
                build_event(
                    capture,
                    time=context.started,
                    request_id=request_id,
                    domain=view.host,
                    method=view.method,
                    path=view.raw_path,
                    status=status,
                    user_agent=view.header("user-agent"),
                    referer=view.header("referer"),
                    client_ip=context.client_ip,
                    enrich=self.enrich,
                    complete=complete,
                )
            )

    def _account(self, request: GatewayRequest, status: int, kind: str, started: float,
                 context: RequestContext | None = None) -> None:
        request.accounted = True
        self.in_flight -= 1
        duration = self.now() - started
        metrics.request_finished(status, request.method, kind, duration, request.sentLength)
        if self.access_log is not None:
            view = context.view if context is not None else None
            self.access_log.record(
                method=request.method.decode("ascii", "replace"),
                host=view.host if view else "",
                path=view.raw_path if view else request.uri.decode("latin-1")[:200],
                status=status, sent_bytes=request.sentLength, duration=duration, kind=kind,
                user_agent=view.header("user-agent") if view else None,
                client_ip=context.client_ip if context else None,
            )

    def _respond_plain(self, request: GatewayRequest, status: int, message: str, started: float
                       ) -> None:
        request.respond_text(status, message)
        self._account(request, status, "none", started)
