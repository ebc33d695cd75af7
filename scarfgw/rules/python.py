"""python-v1: the PEP 503 / PEP 691 simple index of a domain (spec 2.5, 4.4).

Each manifest rule declares one file of one project. Adjacent rules merge into one index
(spec 3.3); merging is O(1) (a tree of the merged rules) and the index, its pages and their
ETags are built once, on first use. Entries are listed in list order, i.e. most recently
declared first, which reproduces the Haskell golden pages byte for byte.

Deliberate differences from the Haskell gateway (design.md):

* projects are looked up by their PEP 503 normalised name; a request naming a project
  in any other spelling, or without the trailing slash, gets ``301`` to
  ``/simple/<normalised>/`` (the query string is kept; no event is recorded for the
  301), and ``/simple`` gets ``301`` to ``/simple/``. File URLs accept any spelling of
  the project name (no extra hop before the download);
* text and attribute values are HTML-escaped; path pieces in links are percent-encoded
  where a file name holds characters that are not allowed in a URL path;
* links point to the canonical (normalised) URLs; the configured package name is the
  visible text;
* PEP 691 JSON (API version 1.0) is served when the Accept header prefers it; every
  page response (also 304 and 406) carries ``Vary: Accept``; nothing acceptable: 406;
* If-None-Match uses weak comparison and understands ``*``;
* HEAD on a file URL answers like GET (307 with its event).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from scarfgw.rules.base import ListOrderRule, Rule
from scarfgw.rules.decision import Capture, Decision, Redirect, Respond
from scarfgw.rules.fields import Fields
from scarfgw.rules.request import RequestView

KIND: Final = "python"
HTML_TYPE: Final = "text/html"
JSON_TYPE: Final = "application/vnd.pypi.simple.v1+json"
API_VERSION: Final = "1.0"

_VARY: Final = ("Vary", "Accept")
_NORMALISE: Final = re.compile(r"[-_.]+")
_PATH_SAFE: Final = "!$&'()*+,;=:@-._~"


def normalise(name: str) -> str:
    """The PEP 503 normalised form of a project name."""
    return _NORMALISE.sub("-", name).lower()


@dataclass(frozen=True, slots=True)
class PythonFile:
    """One distribution file of a project, as one python-v1 rule declares it."""

    filename: str
    version: str
    backend_url: str
    hash: tuple[str, str] | None
    gpg_sig: bool | None
    requires_python: str | None


@dataclass(frozen=True, slots=True)
class Declaration:
    """What one python-v1 rule declares: a file of the named project."""

    package_name: str
    package_id: str
    file: PythonFile


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page: body bytes, unquoted ETag and Content-Type."""

    body: bytes
    etag: str
    content_type: str


def _etag(*parts: bytes) -> str:
    digest = hashlib.sha256(b"".join(parts)).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def _render_json(document: dict[str, Any]) -> Page:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Page(body, _etag(b"scarf-python-json", body), JSON_TYPE)


def _path_piece(text: str) -> str:
    return quote(text, safe=_PATH_SAFE)


def _capture(
    package: str | None = None, file: PythonFile | None = None
) -> tuple[Capture, ...]:
    return (
        {
            "kind": KIND,
            "package": package,
            "version": file.version if file else None,
            "file": file.filename if file else None,
            "target": file.backend_url if file else None,
        },
    )


class Pages:
    """A page pair (PEP 503 HTML, PEP 691 JSON), each rendered on first use and kept.

    Plain attributes rather than ``functools.cached_property``: compiled by mypyc, a
    ``cached_property`` becomes a plain property and would render the page on every request.
    """

    def __init__(self) -> None:
        self._html: Page | None = None
        self._json: Page | None = None

    @property
    def html_page(self) -> Page:
        """The HTML page (rendered once)."""
        if self._html is None:
            self._html = self.render_html()
        return self._html

    @property
    def json_page(self) -> Page:
        """The JSON page (rendered once)."""
        if self._json is None:
            self._json = self.render_json()
        return self._json

    def render_html(self) -> Page:
        """Render the HTML page."""
        raise NotImplementedError

    def render_json(self) -> Page:
        """Render the JSON page."""
        raise NotImplementedError


class Project(Pages):
    """A project of the index: display name, normalised name, package-id, files by name."""

    def __init__(self, name: str, package_id: str) -> None:
        super().__init__()
        self.name = name
        self.normalised = normalise(name)
        self.package_id = package_id
        self.files: dict[str, PythonFile] = {}
        self.url = f"/simple/{_path_piece(self.normalised)}/"

    def file_url(self, file: PythonFile) -> str:
        """The index URL of one of the project's files (no fragment)."""
        return self.url + _path_piece(file.filename)

    def render_html(self) -> Page:
        """The PEP 503 project page; ETag over its backend URLs and bytes (spec 4.4)."""
        lines = [f"<!DOCTYPE html><html><body><h1>{html.escape(self.name)}</h1>\n"]
        for file in self.files.values():
            href = self.file_url(file)
            if file.hash is not None:
                href += f"#{file.hash[0]}={file.hash[1]}"
            attributes = f' href="{html.escape(href)}"'
            if file.gpg_sig is not None:
                attributes += f' data-gpg-sig="{"true" if file.gpg_sig else "false"}"'
            if file.requires_python is not None:
                attributes += f' data-requires-python="{html.escape(file.requires_python)}"'
            lines.append(f"<a{attributes}>{html.escape(file.filename)}</a><br>\n")
        lines.append("</body></html>")
        body = "".join(lines).encode("utf-8")
        urls = "".join(file.backend_url for file in self.files.values()).encode("utf-8")
        return Page(body, _etag(b"scarf-python-package", urls, body), HTML_TYPE)

    def render_json(self) -> Page:
        """The PEP 691 project page."""
        files: list[dict[str, Any]] = []
        for file in self.files.values():
            entry: dict[str, Any] = {
                "filename": file.filename,
                "url": self.file_url(file),
                "hashes": {file.hash[0]: file.hash[1]} if file.hash else {},
            }
            if file.requires_python is not None:
                entry["requires-python"] = file.requires_python
            if file.gpg_sig is not None:
                entry["gpg-sig"] = file.gpg_sig
            files.append(entry)
        return _render_json(
            {"meta": {"api-version": API_VERSION}, "name": self.normalised, "files": files}
        )


class Index(Pages):
    """The merged index of a domain: projects by normalised name, in list order."""

    def __init__(self, declarations: Iterable[Declaration]) -> None:
        super().__init__()
        self.projects: dict[str, Project] = {}
        for declaration in declarations:
            key = normalise(declaration.package_name)
            project = self.projects.get(key)
            if project is None:
                project = self.projects[key] = Project(
                    declaration.package_name, declaration.package_id
                )
            project.files.setdefault(declaration.file.filename, declaration.file)

    def render_html(self) -> Page:
        """The PEP 503 root page; ETag over its bytes (spec 4.4)."""
        lines = ["<!DOCTYPE html><html><body>\n"]
        lines.extend(
            f'<a href="{html.escape(project.url)}">{html.escape(project.name)}</a><br>\n'
            for project in self.projects.values()
        )
        lines.append("</body></html>")
        body = "".join(lines).encode("utf-8")
        return Page(body, _etag(b"scarf-python-rule", body), HTML_TYPE)

    def render_json(self) -> Page:
        """The PEP 691 root page."""
        return _render_json(
            {
                "meta": {"api-version": API_VERSION},
                "projects": [{"name": project.name} for project in self.projects.values()],
            }
        )


class PythonIndex(ListOrderRule):
    """The python-v1 rule: one declaration, or the merge of two adjacent python rules.

    Python rules keep their list order among themselves.
    """

    rule_type = "python-v1"
    __slots__ = ("_index", "_source", "domain")

    def __init__(
        self, domain: str, source: Declaration | tuple[PythonIndex, PythonIndex]
    ) -> None:
        self.domain = domain
        self._source = source
        self._index: Index | None = None

    def merge(self, following: Rule) -> Rule | None:
        """Spec 3.3: one index; on a collision ``self`` (earlier in the list) wins."""
        if not isinstance(following, PythonIndex):
            return None
        return PythonIndex(self.domain, (self, following))

    def declarations(self) -> Iterator[Declaration]:
        """The merged declarations in list order (iterative: merge trees are deep)."""
        stack: list[PythonIndex] = [self]
        while stack:
            source = stack.pop()._source
            if isinstance(source, Declaration):
                yield source
            else:
                stack.append(source[1])
                stack.append(source[0])

    @property
    def index(self) -> Index:
        """The merged index, built on first use."""
        if self._index is None:
            self._index = Index(self.declarations())
        return self._index

    def match(self, request: RequestView) -> Decision | None:
        """Root page, project page, file redirect, canonical-URL 301, or decline."""
        if request.method not in ("GET", "HEAD"):
            return None
        segments = request.segments
        if not segments or segments[0] != "simple":
            return None
        if len(segments) == 1:
            return _canonical_redirect("/simple/", request)
        if len(segments) == 2 and segments[1] == "":
            return _page(request, self.index, _capture())
        project = self.index.projects.get(normalise(segments[1]))
        if project is None or len(segments) > 3:
            return None
        if len(segments) == 2 or (segments[2] == "" and segments[1] != project.normalised):
            return _canonical_redirect(project.url, request)
        if segments[2] == "":
            return _page(request, project, _capture(project.package_id))
        file = project.files.get(segments[2])
        if file is None:
            return None
        return Redirect(file.backend_url, KIND, _capture(project.package_id, file))


def _canonical_redirect(url: str, request: RequestView) -> Redirect:
    return Redirect(url + request.query_with_mark, KIND, status=301)


_HTML_EXACT: Final = frozenset(
    {HTML_TYPE, "application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.latest+html"}
)
_JSON_EXACT: Final = frozenset({JSON_TYPE, "application/vnd.pypi.simple.latest+json"})


def _accept_ranges(request: RequestView) -> list[tuple[str, float]]:
    ranges: list[tuple[str, float]] = []
    for value in request.headers.get_all("accept"):
        for item in value.split(","):
            media, *params = [part.strip() for part in item.split(";")]
            media = "*/*" if media == "*" else media.lower()
            if "/" not in media:
                continue
            quality = 1.0
            for param in params:
                name, _, raw = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        quality = float(raw.strip())
                    except ValueError:
                        quality = -1.0
            if 0.0 <= quality <= 1.0:
                ranges.append((media, quality))
    return ranges


def _quality(ranges: list[tuple[str, float]], exact: frozenset[str]) -> float:
    """The q-value of the most specific ranges matching any of ``exact`` (RFC 9110 12.5.1)."""
    main_types = {media.partition("/")[0] for media in exact}
    best_specificity, quality = -1, 0.0
    for media, q in ranges:
        if media in exact:
            specificity = 2
        elif media.endswith("/*") and media[:-2] in main_types:
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, quality = specificity, q
        elif specificity == best_specificity:
            quality = max(quality, q)
    return quality


def negotiate(request: RequestView) -> str | None:
    """``"html"`` or ``"json"`` by the Accept header (ties and no Accept: HTML), else None."""
    ranges = _accept_ranges(request)
    if not ranges:
        return "html"
    html_q, json_q = _quality(ranges, _HTML_EXACT), _quality(ranges, _JSON_EXACT)
    if max(html_q, json_q) <= 0.0:
        return None
    return "json" if json_q > html_q else "html"


def not_modified(request: RequestView, etag: str) -> bool:
    """If-None-Match with weak comparison; ``*`` matches any page."""
    for value in request.headers.get_all("if-none-match"):
        for token in value.split(","):
            tag = token.strip()
            if tag == "*":
                return True
            tag = tag.removeprefix("W/")
            if len(tag) > 1 and tag.startswith('"') and tag.endswith('"'):
                tag = tag[1:-1]
            if tag == etag:
                return True
    return False


def _page(request: RequestView, pages: Pages, captures: tuple[Capture, ...]) -> Respond:
    choice = negotiate(request)
    if choice is None:
        return Respond(406, KIND, headers=(_VARY,))
    page = pages.json_page if choice == "json" else pages.html_page
    quoted = f'"{page.etag}"'
    if not_modified(request, page.etag):
        return Respond(304, KIND, headers=(("etag", quoted), _VARY), captures=captures)
    headers = (
        ("Etag", quoted),
        ("Content-Length", str(len(page.body))),
        ("Content-Type", page.content_type),
        _VARY,
    )
    body = page.body if request.method == "GET" else b""
    return Respond(200, KIND, headers=headers, body=body, captures=captures)


def parse_python_v1(fields: Fields) -> Rule:
    """Compile one python-v1 manifest rule (spec 2.5) into a one-file index."""
    hash_value = fields.optional_mapping("hash-value")
    file_hash = None
    if hash_value is not None:
        inner = Fields(hash_value, fields.at("hash-value"))
        file_hash = (inner.string("type"), inner.string("hash"))
    fields.optional_string("backend-simple-index-url")
    fields.optional_string("owner")
    file = PythonFile(
        filename=fields.string("file-name"),
        version=fields.string("version"),
        backend_url=fields.string("backend-url"),
        hash=file_hash,
        gpg_sig=fields.optional_bool("gpg-sig"),
        requires_python=fields.optional_string("requires-python"),
    )
    declaration = Declaration(fields.string("package-name"), fields.string("package-id"), file)
    return PythonIndex(fields.string("domain"), declaration)
