"""npm packuments: fetched from the backend registry, tarball URLs pointed at the gateway.

The core (:mod:`scarfgw.rules.npm`) decides that a request is a packument request; this
shell fetches the document (full, or abbreviated when the client asks for
``application/vnd.npm.install-v1+json``), bounded by the rule's ``max-packument-bytes``,
rewrites the ``dist.tarball`` URLs that follow the registry layout to the origin the client
used, and answers with an ETag of its own (``If-None-Match`` gives 304). Requests for the
same document share one backend fetch (memory stays bounded under a burst). Rewritten documents
are kept in a cache bounded in entries and bytes and revalidated with the backend's ETag on
every request (304 from the backend: the cached copy is served).

A backend that is down, slow, answers something other than a JSON object or a document over
the limit gives a one-line JSON error (502, 504), never a traceback; 404/410 give 404.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final, cast

import orjson
from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.iweb import IResponse

from scarfgw.gateway.proxy import CLIENT_CLOSED, Done, StreamingProxy
from scarfgw.http.channel import GatewayRequest
from scarfgw.ops import metrics
from scarfgw.rules.decision import PackumentFetch, Proxy
from scarfgw.rules.python import not_modified
from scarfgw.rules.request import RequestView

log: Final = Logger()

ABBREVIATED: Final = "application/vnd.npm.install-v1+json"
_ABBREVIATED_ACCEPT: Final = (
    b"application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*")
_FULL_ACCEPT: Final = b"application/json"
_USER_AGENT: Final = b"scarfgw"
_JSON: Final = (b"Content-Type", b"application/json")
DEFAULT_CACHE_ENTRIES: Final = 1024
DEFAULT_CACHE_BYTES: Final = 128 << 20

class BackendAnswer(Exception):
    """The backend's answer cannot be served: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Packument:
    """A rewritten document: ``body``, its own ``etag`` (unquoted), ``content_type``, and
    the backend's ETag (``backend_etag``) to revalidate it with."""

    __slots__ = ("backend_etag", "body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: bytes, backend_etag: bytes | None) -> None:
        self.body = body
        self.etag = hashlib.sha256(body).hexdigest()[:32]
        self.content_type = content_type
        self.backend_etag = backend_etag


CacheKey = tuple[str, bool, str]
"""(backend document URL, abbreviated, public origin)."""


class PackumentCache:
    """Least-recently-used rewritten packuments, at most ``max_entries`` and ``max_bytes``;
    a document larger than a quarter of ``max_bytes`` is not kept."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES,
                 max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[CacheKey, Packument] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Packument | None:
        """The cached document of ``key`` (marked as recently used), else None."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, entry: Packument) -> None:
        """Keep ``entry`` under ``key``, evicting the least recently used beyond the bounds."""
        self.discard(key)
        if len(entry.body) > self.max_bytes // 4:
            return
        self._entries[key] = entry
        self.bytes += len(entry.body)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted.body)

    def discard(self, key: CacheKey) -> None:
        """Forget ``key``."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)


def _after_scheme(url: str) -> str:
    return url.partition("://")[2]


def rewrite_tarballs(document: dict[str, Any], name: str, base: str, origin: str) -> int:
    """Point every ``versions.*.dist.tarball`` at ``<base>/<name>/-/<file>`` (either scheme)
    to ``<origin>/<name>/-/<file>``; other URLs and every other field stay. The count."""
    prefix = _after_scheme(f"{base}/{name}/-/")
    versions = document.get("versions")
    rewritten = 0
    if not isinstance(versions, dict):
        return 0
    for version in versions.values():
        dist = version.get("dist") if isinstance(version, dict) else None
        tarball = dist.get("tarball") if isinstance(dist, dict) else None
        if not isinstance(tarball, str):
            continue
        rest = _after_scheme(tarball)
        file = rest[len(prefix):]
        if rest.startswith(prefix) and file and "/" not in file:
            assert isinstance(dist, dict)
            dist["tarball"] = f"{origin}/{name}/-/{file}"
            rewritten += 1
    return rewritten


class _BoundedBody(Protocol):
    """Collects a response body of at most ``limit`` bytes into ``finished``; a longer body
    is aborted and fails it with a 502 :class:`BackendAnswer`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.finished: defer.Deferred[bytes] = defer.Deferred(self._cancel)

    def _cancel(self, _: defer.Deferred[bytes]) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self.parts.clear()
            self._fail(BackendAnswer(502, f"backend packument larger than {self.limit} bytes"))
            self._cancel(self.finished)
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if reason.check(ResponseDone, PotentialDataLoss):
            if not self.finished.called:
                self.finished.callback(b"".join(self.parts))
        else:
            self._fail(reason)

    def _fail(self, reason: Exception | Failure) -> None:
        if not self.finished.called:
            self.finished.errback(reason)


def read_bounded(response: IResponse, limit: int) -> defer.Deferred[bytes]:
    """The body of ``response``, failing with a 502 :class:`BackendAnswer` over ``limit``."""
    if isinstance(response.length, int) and response.length > limit:
        body = _BoundedBody(0)
        response.deliverBody(body)
        body.finished.addErrback(lambda _: None)
        raise BackendAnswer(502, f"backend packument larger than {limit} bytes")
    body = _BoundedBody(limit)
    response.deliverBody(body)
    return body.finished


def _discard(response: IResponse) -> None:
    """Read (or abort, when long) and forget a body nobody wants."""
    body = _BoundedBody(1 << 16)
    response.deliverBody(body)
    body.finished.addErrback(lambda _: None)


def parse_packument(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``, else a 502 :class:`BackendAnswer`."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BackendAnswer(502, "backend packument is not JSON") from exc
    if not isinstance(document, dict):
        raise BackendAnswer(502, "backend packument is not a JSON object")
    return document


class Packuments:
    """Answers the packument requests of npm-v1 rules, through the proxy's agent and
    upstream map (``proxy.upstreams`` applies to registries too)."""

    def __init__(self, forwarder: StreamingProxy, cache: PackumentCache | None = None) -> None:
        self.forwarder = forwarder
        self.cache = PackumentCache() if cache is None else cache
        self.pending: dict[CacheKey, list[defer.Deferred[Packument]]] = {}
        """Requests waiting for the backend fetch of their key in progress."""

    def forward(self, request: GatewayRequest, view: RequestView, decision: Proxy,
                forwarded_for: Sequence[str], public_origin: str, done: Done,
                trusted_peer: bool = False) -> None:
        """Answer ``request`` with the rewritten packument; ``done(status, True)`` when
        answered (the answer is one write). The signature is the proxy's; the gateway fetches
        the document itself, so no client header reaches the backend, trusted or not."""
        fetch = decision.packument
        assert fetch is not None, "the gateway hands only packument decisions here"
        abbreviated = ABBREVIATED in (view.header("accept") or "").lower()
        base = self.forwarder.upstreams.base_url(decision.backend, fetch.base)
        answer = self._shared((base + fetch.path, abbreviated, public_origin), fetch)
        answer.addCallbacks(lambda entry: self._send(request, view, entry, done),
                            lambda reason: self._fail(request, reason, done))
        request.notifyFinish().addErrback(lambda _: answer.cancel())

    def _shared(self, key: CacheKey, fetch: PackumentFetch) -> defer.Deferred[Packument]:
        """The document of ``key``: one backend fetch at a time per key, shared by every
        request that waits for it (a waiter that cancels only stops waiting)."""
        waiters = self.pending.get(key)

        def stop_waiting(waiter: defer.Deferred[Packument]) -> None:
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)

        waiter: defer.Deferred[Packument] = defer.Deferred(stop_waiting)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        waiters = self.pending[key] = [waiter]
        fetching = defer.ensureDeferred(self._packument(key, fetch))
        timed_out: list[bool] = []

        def give_up() -> None:
            timed_out.append(True)
            fetching.cancel()

        timer = self.forwarder.reactor.callLater(self.forwarder.config.response_timeout,
                                                 give_up)

        def settled(result: Packument | Failure) -> None:
            if timer.active():
                timer.cancel()
            if timed_out:
                metrics.UPSTREAM_ERRORS.labels("timeout").inc()
                result = Failure(BackendAnswer(504, "backend registry did not answer in time"))
            for each in self.pending.pop(key):
                if isinstance(result, Failure):
                    each.errback(result)
                else:
                    each.callback(result)

        fetching.addBoth(settled)
        return waiter

    async def _packument(self, key: CacheKey, fetch: PackumentFetch) -> Packument:
        url, abbreviated, origin = key
        cached = self.cache.get(key)
        headers = TwistedHeaders({
            b"accept": [_ABBREVIATED_ACCEPT if abbreviated else _FULL_ACCEPT],
            b"user-agent": [_USER_AGENT],
        })
        if cached is not None and cached.backend_etag is not None:
            headers.setRawHeaders(b"if-none-match", [cached.backend_etag])
        response = await self.forwarder.agent.request(b"GET", url.encode("ascii"), headers)
        if response.code == 304 and cached is not None:
            _discard(response)
            return cached
        if response.code != 200:
            _discard(response)
            if response.code in (404, 410):
                raise BackendAnswer(404, "package not found")
            raise BackendAnswer(502, f"backend registry answered {response.code}")
        document = parse_packument(await read_bounded(response, fetch.max_bytes))
        rewrite_tarballs(document, fetch.name, fetch.base, origin)
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if b"json" not in content_type.lower():
            content_type = b"application/json"
        etag = (response.headers.getRawHeaders(b"etag") or [None])[0]
        entry = Packument(orjson.dumps(document), content_type, etag)
        if etag is None:
            self.cache.discard(key)
        else:
            self.cache.put(key, entry)
        return entry

    def _send(self, request: GatewayRequest, view: RequestView, entry: Packument,
              done: Done) -> None:
        if request.disconnected:
            done(CLIENT_CLOSED, True)
            return
        headers = [(b"ETag", f'"{entry.etag}"'.encode("ascii")), (b"Vary", b"Accept")]
        if not_modified(view, entry.etag):
            request.respond(304, headers)
            done(304, True)
            return
        request.respond(200, [*headers, (b"Content-Type", entry.content_type)], entry.body)
        done(200, True)

    def _fail(self, request: GatewayRequest, reason: Failure, done: Done) -> None:
        if request.disconnected:
            done(CLIENT_CLOSED, True)
            return
        if isinstance(reason.value, BackendAnswer):
            status, message = reason.value.status, reason.value.message
        elif reason.check(ConnectError, DNSLookupError, ResponseNeverReceived, ConnectionClosed):
            metrics.UPSTREAM_ERRORS.labels("connect").inc()
            status, message = 502, "backend registry unreachable"
        else:
            log.failure("fetching a packument failed", reason)
            status, message = 502, "backend registry error"
        if status >= 500:
            log.info("packument: {message}", message=message)
        request.respond(status, [_JSON], orjson.dumps({"error": message}) + b"\n")
        done(status, True)
