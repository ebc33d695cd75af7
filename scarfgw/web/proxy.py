"""Streaming proxy to registry backends over a pooled Agent, with backpressure.

The upstream body is relayed chunk by chunk; the upstream transport is registered as the
producer of the client response, so a slow client pauses the backend read and memory stays
bounded. A client that goes away aborts the upstream request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.iweb import IResponse

from scarfgw import metrics
from scarfgw.config import ProxyConfig
from scarfgw.rules.decision import Proxy
from scarfgw.rules.request import RequestView
from scarfgw.web.channel import GatewayRequest
from scarfgw.web.errors import registry_error

log = Logger()

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
        b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"x-forwarded-for", b"content-length", b"expect"}
_FOLLOWED_STATUSES = (302, 307)
CLIENT_CLOSED = 499
"""Status reported to ``done`` when the client left before the backend answered (no event)."""
_PROXIED_METHODS = (b"GET", b"HEAD")


def connection_tokens(headers: TwistedHeaders) -> frozenset[bytes]:
    """Header names listed in ``Connection`` (also hop-by-hop, RFC 9110 7.6.1)."""
    return frozenset(
        token.strip().lower()
        for value in headers.getRawHeaders(b"connection", [])
        for token in value.split(b",")
        if token.strip()
    )


def is_registry_location(location: str) -> bool:
    """True when a redirect points at the registry API (``/v2`` or ``/v2/...``)."""
    path = urlsplit(location).path
    return path == "/v2" or path.startswith("/v2/")


class UpstreamMap:
    """Maps a public backend (``host[:port]``) to the base URL the gateway itself uses."""

    def __init__(self, upstreams: dict[str, str]) -> None:
        self._upstreams = {host: url.rstrip("/") for host, url in upstreams.items()}

    def base_url(self, backend: str) -> str:
        """``proxy.upstreams[backend]`` or ``https://backend``."""
        return self._upstreams.get(backend) or f"https://{backend}"


class _Relay(Protocol):
    """Copies an upstream body to the client request, paused by the client's backpressure."""

    def __init__(self, request: GatewayRequest, finished: defer.Deferred[None]) -> None:
        self.request = request
        self.finished = finished

    def connectionMade(self) -> None:
        self.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.request.write(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        request = self.request
        if not request.finished and not request._disconnected:
            request.unregisterProducer()
            if reason.check(ResponseDone, PotentialDataLoss):
                request.finish()
            else:
                log.info("upstream body broke off: {reason}", reason=reason.value)
                metrics.UPSTREAM_ERRORS.labels("body_interrupted").inc()
                request.channel.transport.abortConnection()
        self.finished.callback(None)


class _Discard(Protocol):
    """Reads and forgets a body (a redirect's), so the pooled connection stays usable."""

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        pass


class StreamingProxy:
    """Forwards GET/HEAD requests to backends and streams the answers back."""

    def __init__(self, reactor: Any, config: ProxyConfig) -> None:
        self.reactor = reactor
        self.config = config
        self.upstreams = UpstreamMap(dict(config.upstreams))
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = config.max_connections_per_host
        trust = None
        if config.ca_bundle:
            with open(config.ca_bundle, "rb") as handle:
                trust = Certificate.loadPEM(handle.read())
        self.agent = Agent(
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust),
            connectTimeout=config.connect_timeout,
            pool=self.pool,
        )

    def close(self) -> defer.Deferred[None]:
        """Close pooled connections."""
        return self.pool.closeCachedConnections()

    def forward(
        self,
        request: GatewayRequest,
        view: RequestView,
        decision: Proxy,
        forwarded_for: Sequence[str],
        done: Callable[[int], None],
    ) -> None:
        """Answer ``request`` from ``decision.backend``; ``done(status)`` when finished."""
        if request.method not in _PROXIED_METHODS:
            self._error(request, 405, "UNSUPPORTED", "only GET and HEAD are proxied", done)
            return
        url = self.upstreams.base_url(decision.backend) + view.raw_path + view.query_with_mark
        self._attempt(request, decision, url, self._upstream_headers(request, forwarded_for), 0,
                      done)

    def _upstream_headers(self, request: GatewayRequest, forwarded_for: Sequence[str]
                          ) -> TwistedHeaders:
        headers = TwistedHeaders()
        dropped = _NOT_FORWARDED | connection_tokens(request.requestHeaders)
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in dropped:
                headers.setRawHeaders(name, values)
        if forwarded_for:
            headers.setRawHeaders(b"x-forwarded-for", [", ".join(forwarded_for).encode()])
        return headers

    def _attempt(self, request: GatewayRequest, decision: Proxy, url: str,
                 headers: TwistedHeaders, hops: int, done: Callable[[int], None]) -> None:
        started = time.monotonic()
        pending = self.agent.request(request.method, url.encode("ascii"), headers)
        timer = self.reactor.callLater(self.config.response_timeout, pending.cancel)
        cancelled_by_client = request.notifyFinish()

        def client_gone(_: object) -> None:
            if not pending.called:
                pending.cancel()

        cancelled_by_client.addErrback(client_gone)

        def answered(response: IResponse) -> None:
            if timer.active():
                timer.cancel()
            metrics.UPSTREAM_DURATION.observe(time.monotonic() - started)
            if request._disconnected:
                response.deliverBody(_Discard())
                done(CLIENT_CLOSED)
                return
            location = (response.headers.getRawHeaders(b"location") or [b""])[0].decode(
                "latin-1").strip()
            if (response.code in _FOLLOWED_STATUSES and is_registry_location(location)
                    and hops < self.config.max_redirects):
                response.deliverBody(_Discard())
                target = urljoin(url, location)
                if urlsplit(target).netloc != urlsplit(url).netloc:
                    headers.removeHeader(b"authorization")
                self._attempt(request, decision, target, headers, hops + 1, done)
                return
            self._relay(request, decision, response, done)

        def failed(reason: Failure) -> None:
            if timer.active():
                timer.cancel()
            if request._disconnected:
                done(CLIENT_CLOSED)
                return
            if reason.check(defer.CancelledError):
                metrics.UPSTREAM_ERRORS.labels("timeout").inc()
                self._error(request, 504, "UNAVAILABLE", "backend did not answer in time", done)
            else:
                reason_label = _error_reason(reason)
                metrics.UPSTREAM_ERRORS.labels(reason_label).inc()
                log.info("upstream {url} failed: {reason}", url=url, reason=reason.value)
                self._error(request, 502, "UNAVAILABLE", "backend unreachable", done)

        pending.addCallbacks(answered, failed)
        pending.addErrback(lambda f: log.failure("proxy failed", f))

    def _relay(self, request: GatewayRequest, decision: Proxy, response: IResponse,
               done: Callable[[int], None]) -> None:
        request.setResponseCode(response.code, response.phrase)
        dropped = HOP_BY_HOP | connection_tokens(response.headers)
        is_redirect = response.code in _FOLLOWED_STATUSES
        for name, values in response.headers.getAllRawHeaders():
            lower = name.lower()
            if lower in dropped or (is_redirect and lower == b"content-length"):
                continue
            if lower == b"location":
                values = [self._public_location(decision.backend, v) for v in values]
            request.responseHeaders.setRawHeaders(name, values)
        finished: defer.Deferred[None] = defer.Deferred()
        finished.addCallback(lambda _: done(response.code))
        if is_redirect:
            response.deliverBody(_Discard())
            request.responseHeaders.setRawHeaders(b"content-length", [b"0"])
            request.finish()
            finished.callback(None)
            return
        request.notifyFinish().addErrback(lambda _: _stop(relay))
        relay = _Relay(request, finished)
        response.deliverBody(relay)

    @staticmethod
    def _public_location(backend: str, value: bytes) -> bytes:
        text = value.decode("latin-1").strip()
        if text.startswith("/"):
            return f"https://{backend}{text}".encode("latin-1")
        return value

    def _error(self, request: GatewayRequest, status: int, code: str, message: str,
               done: Callable[[int], None]) -> None:
        body = registry_error(code, message)
        request.setResponseCode(status)
        request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
        request.write(body)
        request.finish()
        done(status)


def _stop(relay: _Relay) -> None:
    transport = relay.transport
    if transport is not None:
        transport.stopProducing()


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
