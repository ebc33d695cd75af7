"""The insights API under ``/api/v1`` (design.md "Insights"), JSON with Bearer tokens.

Every refusal is a JSON ``{"error": reason}``: 401 without a valid token (also for a
malformed ``Authorization`` header), 403 for a package the token may not read, 404 for an
unknown package or path, 400 for a bad parameter (unknown, repeated, not a date, a reversed
range or one longer than :data:`MAX_DAYS`). A failing store answers 503; nothing a client
sends causes a 500 or a traceback.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import unquote

import orjson
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from scarfgw.insights.model import BREAKDOWNS, INTERVALS, EventPages, Grant, Reader
from scarfgw.insights.tokens import Tokens

log = Logger()

MAX_DAYS: Final = 3 * 366 + 1
"""The longest range one query may cover (three years)."""
DEFAULT_DAYS: Final = 30
_PACKAGE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


class ApiError(Exception):
    """A refusal: HTTP ``status`` and the ``reason`` sent as JSON."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def today(clock: Callable[[], float]) -> date:
    """The current UTC date of ``clock`` (Unix seconds)."""
    return datetime.fromtimestamp(clock(), UTC).date()


def parse_range(values: Mapping[str, str], clock: Callable[[], float]) -> tuple[date, date]:
    """``from`` and ``to`` (inclusive UTC days, ``YYYY-MM-DD``); defaults: the last 30 days
    up to today."""
    end = _date(values, "to") or today(clock)
    start = _date(values, "from") or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise ApiError(400, f"from ({start}) is after to ({end})")
    if (end - start).days + 1 > MAX_DAYS:
        raise ApiError(400, f"the range covers more than {MAX_DAYS} days")
    return start, end


def _date(values: Mapping[str, str], key: str) -> date | None:
    text = values.get(key)
    if text is None:
        return None
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"{key}: expected a date YYYY-MM-DD, got {text[:40]!r}") from None


def _query(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters, each at most once and each one of ``allowed``."""
    values: dict[str, str] = {}
    for raw, items in (request.args or {}).items():
        name = raw.decode("utf-8", "replace")
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(400, f"unknown parameter {name[:40]!r} (known: {known})")
        if len(items) != 1:
            raise ApiError(400, f"parameter {name!r} given {len(items)} times")
        values[name] = items[0].decode("utf-8", "replace")
    return values


def _json(request: Request, status: int, document: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return orjson.dumps(document)


class ApiResource(Resource):
    """``/api/v1/...``: every path below is answered here."""

    isLeaf = True

    def __init__(self, reader: Reader, tokens: Tokens, clock: Callable[[], float]) -> None:
        super().__init__()
        self.reader = reader
        self.tokens = tokens
        self.clock = clock

    def render(self, request: Request) -> bytes | int:
        """Authenticate, route, answer (asynchronously for queries)."""
        try:
            if request.method not in (b"GET", b"HEAD"):
                request.setHeader(b"allow", b"GET, HEAD")
                raise ApiError(405, "only GET and HEAD are allowed")
            grant = self._grant(request)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            self._answer(request, grant)
        except ApiError as error:
            return self._refuse(request, error)
        return NOT_DONE_YET

    def _refuse(self, request: Request, error: ApiError) -> bytes:
        if error.status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="scarfgw insights"')
        return _json(request, error.status, {"error": error.reason})

    def _grant(self, request: Request) -> Grant:
        raw = request.getHeader(b"authorization")
        if raw is None:
            raise ApiError(401, "an Authorization: Bearer <token> header is required")
        header = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
            raise ApiError(401, "malformed Authorization header: expected Bearer <token>")
        grant = self.tokens.grant(token.strip())
        if grant is None:
            raise ApiError(401, "unknown token")
        return grant

    def _route(self, request: Request) -> list[str]:
        segments = [unquote(part.decode("utf-8", "replace"))
                    for part in request.postpath or []]
        if segments and segments[-1] == "":
            segments.pop()
        return segments

    def _package(self, grant: Grant, text: str) -> str:
        if not any(package.id == text for package in self.reader.packages()):
            if not _PACKAGE_ID.fullmatch(text):
                raise ApiError(400, "malformed package id")
            raise ApiError(404, f"unknown package {text!r}")
        if not grant.may_read(text):
            raise ApiError(403, f"this token may not read package {text!r}")
        return text

    def _answer(self, request: Request, grant: Grant) -> None:
        route = self._route(request)
        if route == ["packages"]:
            _query(request, frozenset())
            work = self._packages(grant)
        elif len(route) == 3 and route[0] == "packages" and route[2] == "downloads":
            values = _query(request, frozenset({"from", "to", "interval", "by"}))
            work = self._downloads(self._package(grant, route[1]), values)
        elif len(route) == 3 and route[0] == "packages" and route[2] == "companies":
            values = _query(request, frozenset({"from", "to"}))
            work = self._companies(request, self._package(grant, route[1]), values)
        elif route == ["events"]:
            values = _query(request, frozenset({"package", "from", "to"}))
            if "package" not in values:
                raise ApiError(400, "package: required")
            self._events(request, self._package(grant, values["package"]), values)
            return
        else:
            raise ApiError(404, "no such API path")
        work.addCallbacks(lambda body: self._finish(request, body),
                          lambda failure: self._failed(request, failure))

    def _finish(self, request: Request, body: bytes) -> None:
        if not request.finished and not getattr(request, "_disconnected", False):
            request.write(body)
            request.finish()

    def _failed(self, request: Request, failure: Failure) -> None:
        if failure.check(ApiError):
            error = failure.value
            assert isinstance(error, ApiError)
            self._finish(request, self._refuse(request, error))
            return
        log.failure("insights query failed", failure)
        if request.finished or getattr(request, "_disconnected", False):
            return
        if getattr(request, "startedWriting", False):
            request.loseConnection()
            return
        self._finish(request, _json(request, 503, {"error": "the insights store is not "
                                                             "available; try again later"}))

    @inlineCallbacks
    def _packages(self, grant: Grant) -> Any:
        end = today(self.clock)
        totals = yield self.reader.totals(end - timedelta(days=DEFAULT_DAYS - 1), end)
        return orjson.dumps({"packages": [
            {"id": package.id, "kind": package.kind, "label": package.label,
             "domains": list(package.domains), "downloads_30d": totals.get(package.id, 0)}
            for package in self.reader.packages() if grant.may_read(package.id)]})

    @inlineCallbacks
    def _downloads(self, package_id: str, values: Mapping[str, str]) -> Any:
        start, end = parse_range(values, self.clock)
        interval = values.get("interval", "day")
        if interval not in INTERVALS:
            raise ApiError(400, f"interval: expected one of {', '.join(INTERVALS)}")
        by = values.get("by") or None
        if by is not None and by not in BREAKDOWNS:
            raise ApiError(400, f"by: expected one of {', '.join(BREAKDOWNS)}")
        points = yield self.reader.downloads(package_id, start, end, interval, by)
        return orjson.dumps({
            "package": package_id, "from": start.isoformat(), "to": end.isoformat(),
            "interval": interval, "by": by,
            "series": [{"period": p.period.isoformat(), "key": p.key,
                        "downloads": p.downloads, "unique": p.unique} for p in points]})

    def _companies(self, request: Request, package_id: str,
                   values: Mapping[str, str]) -> Deferred[bytes]:
        start, end = parse_range(values, self.clock)
        wants_csv = b"text/csv" in (request.getHeader(b"accept") or b"")

        def render(rows: list[Any]) -> bytes:
            records = [{"company": row.company, "downloads": row.downloads,
                        "unique": row.unique,
                        "first_seen": row.first_seen.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "last_seen": row.last_seen.strftime("%Y-%m-%dT%H:%M:%SZ")}
                       for row in rows]
            if not wants_csv:
                return orjson.dumps({"package": package_id, "from": start.isoformat(),
                                     "to": end.isoformat(), "companies": records})
            request.setHeader(b"content-type", b"text/csv; charset=utf-8")
            request.setHeader(b"content-disposition",
                              f'attachment; filename="{package_id}-companies.csv"'.encode())
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=list(records[0]) if records else
                                    ["company", "downloads", "unique", "first_seen",
                                     "last_seen"], lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(records)
            return text.getvalue().encode("utf-8")

        return self.reader.companies(package_id, start, end).addCallback(render)

    def _events(self, request: Request, package_id: str, values: Mapping[str, str]) -> None:
        start, end = parse_range(values, self.clock)
        request.setHeader(b"content-type", b"application/x-ndjson")
        request.setHeader(b"cache-control", b"no-store")
        _Export(request, self.reader.events(package_id, start, end),
                lambda failure: self._failed(request, failure)).start()


@implementer(IPushProducer)
class _Export:
    """The NDJSON export written to ``request`` as fast as the client reads it: a push
    producer on the request that fetches the next page only while the transport is not
    paused (its buffer holds at most about one page). The pages are closed once the client
    goes away or a page fails; ``failed`` then answers the failure."""

    def __init__(self, request: Request, pages: EventPages,
                 failed: Callable[[Failure], None]) -> None:
        self.request = request
        self.pages = pages
        self.failed = failed
        self.paused = False
        self.fetching = False
        self.stopped = False
        self.closed = False

    def start(self) -> None:
        """Register on the request and fetch the first page."""
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._fetch()

    def pauseProducing(self) -> None:
        """The transport's buffer is full: fetch nothing more for now."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The client read the buffer: fetch the next page."""
        self.paused = False
        self._fetch()

    def stopProducing(self) -> None:
        """The client went away: close the pages (once a page in flight is back)."""
        self.stopped = True
        self._close()

    def _fetch(self) -> None:
        if self.paused or self.fetching or self.stopped:
            return
        self.fetching = True
        self.pages.next_page().addCallbacks(self._page, self._page_failed)

    def _page(self, page: bytes) -> None:
        self.fetching = False
        if self.stopped:
            self._close()
            return
        if not page:
            self.stopped = self.closed = True
            self.request.unregisterProducer()
            self.request.finish()
            return
        self.request.write(page)
        self._fetch()

    def _page_failed(self, failure: Failure) -> None:
        self.fetching = False
        already = self.stopped
        self.stopProducing()
        if not already:
            self.request.unregisterProducer()
            self.failed(failure)

    def _close(self) -> None:
        if self.closed or self.fetching:
            return
        self.closed = True
        self.pages.close().addErrback(
            lambda failure: log.failure("closing an insights export failed", failure))
