"""Streaming proxy to registry backends over a pooled Agent, with backpressure.

The upstream body is relayed chunk by chunk; the upstream transport is registered as the
producer of the client response, so a slow client pauses the backend read and memory stays
bounded. A client that goes away aborts the upstream request.

Both sockets of a relay move up to :data:`CHUNK_BYTES` per system call (Twisted's 64/128 KiB
defaults cost half the throughput); that is also the most a slow client's socket buffers
before the upstream read pauses.

What is specific to registries (following ``/v2`` redirects, token realms, ``Location``
rewrites) is in :mod:`scarfgw.gateway.registry`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from io import BytesIO
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError, TimeoutError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from scarfgw.analytics.event import new_request_id
from scarfgw.gateway.errors import registry_error
from scarfgw.gateway.registry import (
    FOLLOWED_STATUSES,
    REALM_PROBE_PATH,
    TokenRealms,
    followed_target,
    public_location,
    same_host,
    token_url,
)
from scarfgw.gateway.settings import ProxyConfig
from scarfgw.http.channel import GatewayRequest
from scarfgw.ops import metrics
from scarfgw.ops.logging import FailureLog
from scarfgw.rules.decision import Proxy
from scarfgw.rules.request import RequestView
from scarfgw.tls.certs import trust_root

log = Logger()
failures = FailureLog(log)

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
        b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"x-forwarded-for", b"content-length", b"expect"}
FORWARDING = frozenset({b"x-forwarded-host", b"x-forwarded-proto", b"forwarded", b"x-real-ip"})
"""Forwarding headers passed on only from a trusted proxy (X-Forwarded-For is rebuilt)."""
CLIENT_CLOSED = 499
"""Status reported to ``done`` when the client left before the backend answered (no event)."""
_PROXIED_METHODS = (b"GET", b"HEAD")
_NO_BODY = (204, 304)

CHUNK_BYTES = 1 << 20
"""Read size of upstream sockets; send size and pause threshold of relaying client sockets."""

Done = Callable[[int, bool], None]
"""Told the final status, and whether the response body was delivered whole."""


def tune_transport(transport: object) -> None:
    """Let a TCP transport read, send and buffer :data:`CHUNK_BYTES` at a time."""
    if isinstance(transport, FileDescriptor):
        transport.bufferSize = CHUNK_BYTES
        transport.SEND_LIMIT = CHUNK_BYTES


def connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` values (also hop-by-hop, RFC 9110 7.6.1)."""
    return frozenset(
        token.strip().lower() for value in values for token in value.split(b",")
        if token.strip()
    )


class UpstreamMap:
    """Maps a public backend (``host[:port]``) to the base URL the gateway itself uses."""

    def __init__(self, upstreams: dict[str, str]) -> None:
        self._upstreams = {host: url.rstrip("/") for host, url in upstreams.items()}

    def base_url(self, backend: str, default: str | None = None) -> str:
        """``proxy.upstreams[backend]``, else ``default``, else ``https://backend``."""
        return self._upstreams.get(backend) or default or f"https://{backend}"


@implementer(IPushProducer)
class _Relay(Protocol):
    """Copies an upstream body to the client request, paused by the client's backpressure.

    It is the client response's producer and passes pause/resume on to the upstream
    transport. An upstream that sends nothing for ``stall_timeout`` seconds while the
    client is ready for more is aborted (a slow client never counts as a stall).
    """

    def __init__(self, request: GatewayRequest, finished: Callable[[bool], None], clock: Any,
                 stall_timeout: float) -> None:
        self.request = request
        self.finished = finished
        self.clock = clock
        self.stall_timeout = stall_timeout
        self.stall_timer: Any = None

    def connectionMade(self) -> None:
        tune_transport(self.request.transport)
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._watch()

    def _watch(self) -> None:
        if self.stall_timer is not None and self.stall_timer.active():
            self.stall_timer.reset(self.stall_timeout)
        else:
            self.stall_timer = self.clock.callLater(self.stall_timeout, self._stalled)

    def _unwatch(self) -> None:
        if self.stall_timer is not None and self.stall_timer.active():
            self.stall_timer.cancel()

    def _stalled(self) -> None:
        log.info("upstream body stalled for {seconds} s, aborting", seconds=self.stall_timeout)
        metrics.UPSTREAM_ERRORS.labels("timeout").inc()
        self.stopProducing()

    def pauseProducing(self) -> None:
        """The client is full: pause the upstream (and stop counting a stall)."""
        self._unwatch()
        cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        """The client wants more: resume the upstream."""
        self._watch()
        cast(IPushProducer, self.transport).resumeProducing()

    def stopProducing(self) -> None:
        """Abort the upstream body (client gone, or upstream stalled)."""
        self._unwatch()
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        self._watch()
        self.request.write(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self._unwatch()
        request = self.request
        if not request.finished and not request.disconnected:
            request.unregisterProducer()
            if reason.check(ResponseDone, PotentialDataLoss):
                request.finish()
            else:
                log.info("upstream body broke off: {reason}", reason=reason.value)
                metrics.UPSTREAM_ERRORS.labels("body_interrupted").inc()
                request.abort()
        self.finished(request.body_complete)


class _Discard(Protocol):
    """Reads and forgets a body (a redirect's: the pooled connection stays usable), or aborts
    it (``abort``: nobody wants it any more)."""

    def __init__(self, abort: bool = False) -> None:
        self.abort = abort

    def connectionMade(self) -> None:
        if self.abort:
            cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        pass


@implementer(IStreamClientEndpoint)
class _TunedEndpoint:
    """Connects through ``endpoint`` and tunes the new connection's TCP transport."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self.endpoint = endpoint

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """Connect, then :func:`tune_transport` the plain TCP connection."""
        def tuned(protocol: IProtocol) -> IProtocol:
            tune_transport(getattr(protocol, "transport", None))
            return protocol

        return self.endpoint.connect(factory).addCallback(tuned)


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Agent endpoints: TCP (TLS for https) with the connect timeout, tuned for streaming."""

    def __init__(self, reactor: Any, policy: BrowserLikePolicyForHTTPS, timeout: float) -> None:
        self.reactor = reactor
        self.policy = policy
        self.timeout = timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The endpoint reaching ``uri``'s host and port."""
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, uri.host, uri.port, timeout=self.timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self.policy.creatorForNetloc(uri.host, uri.port), endpoint)
        return _TunedEndpoint(endpoint)


class StreamingProxy:
    """Forwards GET/HEAD requests to backends and streams the answers back."""

    def __init__(self, reactor: Any, config: ProxyConfig) -> None:
        self.reactor = reactor
        self.config = config
        self.upstreams = UpstreamMap(dict(config.upstreams))
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = config.max_connections_per_host
        trust = trust_root(config.ca_bundle) if config.ca_bundle else None
        endpoints = _Endpoints(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust),
                               config.connect_timeout)
        self.agent = Agent.usingEndpointFactory(reactor, endpoints, pool=self.pool)
        self.realms = TokenRealms()
        self.cooperator = Cooperator(scheduler=partial(reactor.callLater, 0))
        """Writes request bodies upstream, on this proxy's reactor."""

    def close(self) -> defer.Deferred[None]:
        """Close pooled connections."""
        return self.pool.closeCachedConnections()

    def forward(
        self,
        request: GatewayRequest,
        view: RequestView,
        decision: Proxy,
        forwarded_for: Sequence[str],
        public_origin: str,
        done: Done,
        trusted_peer: bool = False,
    ) -> None:
        """Answer ``request`` from ``decision.backend``; ``done(status, complete)`` when
        finished.

        The decision's ``base_url`` (the backend's URL when ``proxy.upstreams`` has none) and
        ``path`` (instead of the request's) say where the request goes.

        ``public_origin`` (``scheme://host[:port]`` as the client sees the gateway) names the
        gateway's own ``/v2/token`` when the rule rewrites the token realm. The client's
        :data:`FORWARDING` headers are passed on only when it is a ``trusted_peer``.
        """
        exchange = _Exchange(self, request, decision, forwarded_for, public_origin, done,
                             trusted_peer)
        if request.method not in _PROXIED_METHODS and not decision.site:
            exchange.error(405, "UNSUPPORTED", "only GET and HEAD are proxied")
        elif decision.token_endpoint:
            self._token_realm(decision.backend).addCallback(
                lambda realm: exchange.send(token_url(realm, view.raw_query))
                if realm else exchange.error(502, "UNAVAILABLE", "backend has no token realm")
            )
        else:
            base = self.upstreams.base_url(decision.backend, decision.base_url)
            path = view.raw_path if decision.path is None else decision.path
            exchange.send(base + path + view.query_with_mark)

    def _token_realm(self, backend: str) -> defer.Deferred[str | None]:
        """The backend's real realm: remembered, or read from its ``/v2/`` challenge."""
        known = self.realms.known(backend)
        if known is not None:
            return defer.succeed(known)
        url = self.upstreams.base_url(backend) + REALM_PROBE_PATH
        asked = self.agent.request(b"GET", url.encode("ascii"))
        timer = self.reactor.callLater(self.config.response_timeout, asked.cancel)

        def challenged(response: IResponse) -> str | None:
            response.deliverBody(_Discard())
            return self.realms.learn(
                backend, response.headers.getRawHeaders(b"www-authenticate", []))

        def unreachable(reason: Failure) -> None:
            metrics.UPSTREAM_ERRORS.labels(_error_reason(reason)).inc()
            log.info("token realm of {backend} unknown: {reason}", backend=backend,
                     reason=reason.value)

        def settled(result: str | None) -> str | None:
            if timer.active():
                timer.cancel()
            return result

        return asked.addCallbacks(challenged, unreachable).addBoth(settled)


class _Exchange:
    """One client request's trip to the backend (following ``/v2`` redirects) and back."""

    def __init__(self, proxy: StreamingProxy, request: GatewayRequest, decision: Proxy,
                 forwarded_for: Sequence[str], public_origin: str, done: Done,
                 trusted_peer: bool) -> None:
        self.public_origin = public_origin
        self.proxy = proxy
        self.request = request
        self.decision = decision
        self._done = done
        self.reported = False
        self.headers = _upstream_headers(request, forwarded_for, trusted_peer)
        if decision.site:
            self.headers.setRawHeaders(b"x-forwarded-proto",
                                       [public_origin.partition(":")[0].encode()])

    def done(self, status: int, complete: bool = True) -> None:
        """Report the outcome to the gateway, exactly once."""
        if not self.reported:
            self.reported = True
            self._done(status, complete)

    def send(self, url: str, hops: int = 0) -> None:
        """Ask ``url``; relay its answer, or follow it when it is a registry redirect."""
        request = self.request
        if request.disconnected:
            self.done(CLIENT_CLOSED)
            return
        proxy = self.proxy
        started = time.monotonic()
        try:
            body = (FileBodyProducer(BytesIO(request.body), cooperator=proxy.cooperator)
                    if request.body and self.decision.site else None)
            pending = proxy.agent.request(request.method, url.encode("ascii"), self.headers,
                                          body)
        except (ValueError, UnicodeError) as exc:
            metrics.UPSTREAM_ERRORS.labels("other").inc()
            log.info("cannot ask upstream {url!r}: {error}", url=url, error=exc)
            self.error(502, "UNAVAILABLE", "backend redirected to an invalid URL")
            return
        timed_out = []

        def give_up() -> None:
            timed_out.append(True)
            pending.cancel()

        timer = proxy.reactor.callLater(proxy.config.response_timeout, give_up)

        def client_gone(_: Failure) -> None:
            if not pending.called:
                pending.cancel()

        request.notifyFinish().addErrback(client_gone)

        def answered(response: IResponse) -> None:
            timer.cancel()
            metrics.UPSTREAM_DURATION.observe(time.monotonic() - started)
            if request.disconnected:
                response.deliverBody(_Discard(abort=True))
                self.done(CLIENT_CLOSED)
                return
            location = (response.headers.getRawHeaders(b"location") or [b""])[0].decode(
                "latin-1").strip()
            target = followed_target(response.code, location, url)
            if target is not None and hops < proxy.config.max_redirects:
                response.deliverBody(_Discard())
                if not same_host(target, url):
                    self.headers.removeHeader(b"authorization")
                self.send(target, hops + 1)
                return
            self._relay(response)

        def failed(reason: Failure) -> None:
            if timer.active():
                timer.cancel()
            if request.disconnected:
                self.done(CLIENT_CLOSED)
            elif timed_out:
                metrics.UPSTREAM_ERRORS.labels("timeout").inc()
                log.info("upstream {url} did not answer in time", url=url)
                self.error(504, "UNAVAILABLE", "backend did not answer in time")
            else:
                metrics.UPSTREAM_ERRORS.labels(_error_reason(reason)).inc()
                log.info("upstream {url} failed: {reason}", url=url, reason=reason.value)
                self.error(502, "UNAVAILABLE", "backend unreachable")

        pending.addCallbacks(answered, failed).addErrback(self._broken, url)

    def _broken(self, reason: Failure, url: str) -> None:
        """An unexpected error: answer 502 if nothing was sent yet, else cut the client off."""
        failures.record(reason, new_request_id(), "proxying {url} failed", url=url)
        request = self.request
        if self.reported or request.finished or request.disconnected:
            self.done(CLIENT_CLOSED)
        elif not request.startedWriting:
            self.error(502, "UNAVAILABLE", "backend error")
        else:
            request.abort()
            self.done(502, complete=False)

    def _relay(self, response: IResponse) -> None:
        request = self.request
        dropped = HOP_BY_HOP | connection_tokens(
            response.headers.getRawHeaders(b"connection", []))
        is_redirect = response.code in FOLLOWED_STATUSES
        headers: list[tuple[bytes, bytes]] = []
        has_length = False
        for name, values in response.headers.getAllRawHeaders():
            lower = name.lower()
            if lower in dropped or (is_redirect and lower == b"content-length"):
                continue
            if lower == b"location" and not self.decision.site:  # a site's stay as they are
                values = [public_location(value, self.decision.backend) for value in values]
            elif lower == b"www-authenticate" and self.decision.rewrite_token_realm:
                values = [self.proxy.realms.own_challenge(value, self.decision.backend,
                                                          self.public_origin)
                          for value in values]
            has_length = has_length or lower == b"content-length"
            headers.extend((name, value) for value in values)
        # Agent keeps Content-Length (except for HEAD) out of ``headers``, in ``length``.
        if is_redirect:
            headers.append((b"Content-Length", b"0"))
        elif (response.code not in _NO_BODY and isinstance(response.length, int)
                and not has_length):
            headers.append((b"Content-Length", b"%d" % response.length))
        request.start(response.code, headers, response.phrase)
        if is_redirect:
            response.deliverBody(_Discard())
            request.finish()
            self.done(response.code)
            return
        response.deliverBody(_Relay(request, lambda complete: self.done(response.code, complete),
                                    self.proxy.reactor, self.proxy.config.response_timeout))

    def error(self, status: int, code: str, message: str) -> None:
        """Answer with a registry-style JSON error and report ``status``."""
        request = self.request
        if request.disconnected:
            self.done(CLIENT_CLOSED)
            return
        request.respond(status, [(b"Content-Type", b"application/json")],
                        registry_error(code, message))
        self.done(status)


def _upstream_headers(request: GatewayRequest, forwarded_for: Sequence[str],
                      trusted_peer: bool) -> TwistedHeaders:
    """The client's end-to-end headers (repeats kept; :data:`FORWARDING` ones only from a
    trusted peer) plus one X-Forwarded-For chain."""
    headers = TwistedHeaders()
    pairs = request.header_pairs
    dropped = (_NOT_FORWARDED if trusted_peer else _NOT_FORWARDED | FORWARDING) | (
        connection_tokens(value for name, value in pairs if name.lower() == b"connection"))
    for name, value in pairs:
        if name.lower() not in dropped:
            headers.addRawHeader(name, value)
    if forwarded_for:
        headers.setRawHeaders(b"x-forwarded-for", [", ".join(forwarded_for).encode()])
    return headers


def _error_reason(reason: Failure) -> str:
    if reason.check(DNSLookupError):
        return "dns"
    if reason.check(TimeoutError):
        return "connect_timeout"
    if reason.check(ConnectError):
        return "connect"
    if reason.check(ResponseNeverReceived, ConnectionClosed):
        return "closed"
    return "other"
