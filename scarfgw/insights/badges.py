"""The public badge endpoints: ``/badge/downloads/{id}.svg``, ``/badge/companies/{id}.svg``
and Scarf's ``/package/installs-badge/{id}`` and ``/package/company-badge/{id}``.

No token: a badge shows only a rounded count. Numbers come from :class:`BadgeCounts` (never a
query per view); answers carry ``Cache-Control: public, max-age=300`` and an ETag, and
``If-None-Match`` gets a 304. An unknown package is a 404, a bad parameter a 400 naming it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from twisted.web.resource import Resource
from twisted.web.server import Request

from scarfgw.insights.badge_counts import BadgeCounts, Measure
from scarfgw.insights.badge_options import BadgeOptionError, BadgeOptions, compact, parse_options
from scarfgw.insights.badge_svg import BadgeSpec, render
from scarfgw.insights.model import Reader

CACHE_CONTROL: Final = b"public, max-age=300"
_LABELS: Final[dict[Measure, str]] = {"downloads": "downloads", "companies": "companies"}
_DEFAULT_COLOR: Final = "#007ec6"
_SUFFIX: Final = {"total": "", "month": "/month", "week": "/week"}
_ROUTES: Final[dict[tuple[bytes, bytes], tuple[Measure, bytes]]] = {
    (b"badge", b"downloads"): ("downloads", b".svg"),
    (b"badge", b"companies"): ("companies", b".svg"),
    (b"package", b"installs-badge"): ("downloads", b""),
    (b"package", b"company-badge"): ("companies", b""),
}
_SVG_HEADERS: Final = (
    (b"Content-Type", b"image/svg+xml; charset=utf-8"),
    (b"Cache-Control", CACHE_CONTROL),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Content-Security-Policy", b"default-src 'none'; img-src data:; style-src 'unsafe-inline'"),
)


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer: status, headers and body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def _plain(status: int, message: str) -> Answer:
    return Answer(status, ((b"Content-Type", b"text/plain; charset=utf-8"),
                           (b"Cache-Control", b"no-store")), message.encode() + b"\n")


def badge_spec(measure: Measure, count: int, options: BadgeOptions) -> BadgeSpec:
    """What the badge of ``count`` shows with ``options``."""
    label = _LABELS[measure] if options.label is None else options.label
    return BadgeSpec(label=label, message=compact(count) + _SUFFIX[options.period],
                     color=options.color or _DEFAULT_COLOR, label_color=options.label_color,
                     style=options.style, logo=options.logo)


@lru_cache(maxsize=1024)
def _rendered(spec: BadgeSpec) -> tuple[bytes, bytes]:
    """The SVG of ``spec`` and its ETag; the badges READMEs show are few, and a refresh
    changes their specs (the count is in the message), so a bounded cache suffices."""
    body = render(spec).encode()
    return body, b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'


class Badges:
    """Answers badge requests from ``counts`` for the packages ``reader`` configures."""

    def __init__(self, reader: Reader, counts: BadgeCounts) -> None:
        self.reader = reader
        self.counts = counts

    def answer(self, section: bytes, path: list[bytes], raw_query: str,
               if_none_match: bytes | None) -> Answer:
        """The answer for ``/{section}/{path...}?{raw_query}``."""
        route = _ROUTES.get((section, path[0])) if len(path) == 2 else None
        if route is None:
            return _plain(404, "no such badge; try /badge/downloads/{package-id}.svg")
        measure, suffix = route
        name = path[1]
        if suffix and name.endswith(suffix):
            name = name[:-len(suffix)]
        package_id = name.decode("utf-8", "replace")
        if package_id not in {package.id for package in self.reader.packages()}:
            return _plain(404, "unknown package")
        try:
            options = parse_options(raw_query)
        except BadgeOptionError as exc:
            return _plain(400, f"bad badge parameter: {exc}")
        count = self.counts.count(measure, options.period, package_id)
        body, etag = _rendered(badge_spec(measure, count, options))
        headers = (*_SVG_HEADERS, (b"ETag", etag))
        if if_none_match is not None and etag in (tag.strip() for tag in
                                                  if_none_match.split(b",")):
            return Answer(304, headers[1:], b"")
        return Answer(200, headers, body)


class BadgeResource(Resource):
    """``/badge/...`` or ``/package/...`` of the insights site."""

    isLeaf = True

    def __init__(self, section: bytes, badges: Badges) -> None:
        super().__init__()
        self.section = section
        self.badges = badges

    def render_GET(self, request: Request) -> bytes:
        """The badge (HEAD: its headers)."""
        query = request.uri.partition(b"?")[2].decode("latin-1")
        answer = self.badges.answer(self.section, request.postpath or [], query,
                                    request.getHeader(b"if-none-match"))
        request.setResponseCode(answer.status)
        for name, value in answer.headers:
            request.setHeader(name, value)
        return answer.body
