"""File rules: file-v1 (URI template, 4.2), file-v2 (PCRE regex, 4.3 and 7), catch-all-v1 (4.5).

Templates and regexes are compiled when the manifest is parsed; a match only runs them.
File redirects carry the request query over to the target (:func:`forward_query`, section 6);
unlike Haskell, a user-info password in the target is kept as written (stance on O11).

file-v2 regexes run on stdlib ``re`` after :func:`translate_pcre` (named groups and
back-references), with ``re.ASCII`` so ``\\d \\w \\s`` keep PCRE's ASCII meaning. PCRE-only
constructs that ``re`` lacks (``\\K``, recursion, ``\\p{..}``) fail at load time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from scarfgw.rules.base import ListOrderRule, Rule
from scarfgw.rules.bodyjson import TooDeep, parse_json_objects
from scarfgw.rules.decision import Capture, Decision, Redirect, Respond
from scarfgw.rules.fields import Fields
from scarfgw.rules.query import QueryEntry, parse_query, query_escape, render_query
from scarfgw.rules.request import RequestView, has_dot_segment
from scarfgw.rules.uritemplate import (
    UriTemplate,
    parse_absolute_uri,
    parse_relative_ref,
    parse_template,
)

BODY_LIMIT: Final = 256
"""Bytes of a file-v1 request body parsed for events (fixed in Haskell)."""

MAX_BODY_EVENTS: Final = 10
"""Objects of a file-v1 request body turned into events (fixed in Haskell)."""

_UNUSED_KEYS: Final = ("package-name", "owner")
_PCRE_TOKEN: Final = re.compile(
    r"\\k(?:<(?P<angle>\w+)>|'(?P<quote>\w+)'|\{(?P<brace>\w+)\})"
    r"|\\."
    r"|\[\^?\]?(?:\\.|[^\]\\])*\]"
    r"|(?P<named>\(\?<)(?=[A-Za-z_])"
    r"|\(\?'(?P<quoted>[A-Za-z_]\w*)'"
    r"|[^\\\[(]+|.",
    re.DOTALL,
)


def forward_query(target: str, request_query: Sequence[QueryEntry]) -> str:
    """Section 6: merge the request's parsed query into an absolute target URL.

    Unchanged when the request has no parameters or the target is not a strict RFC 3986
    absolute URI. Otherwise the target's parameters come first, then the request's, keeping
    the first entry of each name, re-rendered with :func:`render_query`.
    """
    if not request_query:
        return target
    parts = parse_absolute_uri(target)
    if parts is None:
        return target
    combined: dict[str, str | None] = {}
    for name, value in (*parse_query(parts.query or ""), *request_query):
        combined.setdefault(name, value)
    return parts.render_with_query(render_query(combined.items()))


def leaves_prefix(target: str) -> bool:
    """True when the path of ``target`` (an expanded outgoing URL) has ``.`` or ``..``
    segments, encoded or not: a client resolving them would leave the path the rule's
    outgoing URL names (``/1.0/../../x`` is ``/x``). Such captures are declined (a
    deliberate departure from the Haskell gateway, which redirects there)."""
    if "%" not in target and "\\" not in target and "/." not in target and target[:1] != ".":
        return False  # nothing decodes, and no segment starts with a dot: the common case
    parts = parse_absolute_uri(target) or parse_relative_ref(target)
    return has_dot_segment(parts.path if parts is not None else target)


def translate_pcre(pattern: str) -> str:
    """Rewrite PCRE named groups and back-references to Python ``re`` syntax.

    ``(?<name>`` and ``(?'name'`` become ``(?P<name>``; ``\\k<name>``, ``\\k'name'`` and
    ``\\k{name}`` become ``(?P=name)``. Other escapes and character classes are copied.
    """
    out: list[str] = []
    for token in _PCRE_TOKEN.finditer(pattern):
        backref = token.group("angle") or token.group("quote") or token.group("brace")
        if backref:
            out.append(f"(?P={backref})")
        elif token.group("named"):
            out.append("(?P<")
        elif token.group("quoted"):
            out.append(f"(?P<{token.group('quoted')}>")
        else:
            out.append(token.group())
    return "".join(out)


@dataclass(slots=True)
class FileV1Rule:
    """A file-v1 rule: URI-template incoming path, optional outgoing URL template."""

    domain: str
    package_id: str
    incoming: UriTemplate
    outgoing: UriTemplate | None
    rule_type: str = field(default="file-v1", init=False)
    sort_descending: bool = field(default=True, init=False)

    def sort_key(self) -> Any:
        """The template key of spec 3.3 (sorted descending)."""
        return self.incoming.sort_key

    def merge(self, following: Rule) -> Rule | None:
        """File rules never merge."""
        return None

    def match(self, request: RequestView) -> Decision | None:
        """Spec 4.2: redirect, 200, or decline."""
        if self.incoming.has_expressions:
            subject = request.raw_path
            if self.incoming.captures_query:
                subject += request.query_with_mark
            variables = self.incoming.match(subject)
            if not variables:
                return None
            return _file_outcome(self.package_id, self.outgoing, variables, request, with_body=True)
        if not self.incoming.static_check(request.raw_path, request.parsed_query):
            return None
        if self.outgoing is not None and self.outgoing.has_expressions:
            return None
        return _file_outcome(self.package_id, self.outgoing, {}, request, with_body=True)


@dataclass(slots=True)
class FileV2Rule:
    """A file-v2 rule: PCRE incoming path searched in the raw path, optional outgoing URL."""

    domain: str
    package_id: str
    source: str
    regex: re.Pattern[str]
    outgoing: UriTemplate | None
    rule_type: str = field(default="file-v2", init=False)
    sort_descending: bool = field(default=False, init=False)

    def sort_key(self) -> Any:
        """The regex text exactly as written in the manifest (ascending)."""
        return self.source

    def merge(self, following: Rule) -> Rule | None:
        """File rules never merge."""
        return None

    def match(self, request: RequestView) -> Decision | None:
        """Spec 4.3: the first non-empty match in the raw path, then redirect or 200."""
        found = next(
            (m for m in self.regex.finditer(request.raw_path) if m.end() > m.start()), None
        )
        if found is None:
            return None
        return _file_outcome(
            self.package_id, self.outgoing, _group_values(found), request, with_body=False
        )


@dataclass(slots=True)
class CatchAllRule(ListOrderRule):
    """A catch-all-v1 rule: redirect everything to another domain, or answer 200.

    Catch-alls keep their list order.
    """

    domain: str
    package_id: str
    target_domain: str | None
    rule_type: str = field(default="catch-all-v1", init=False)

    def merge(self, following: Rule) -> Rule | None:
        """Adjacent catch-alls collapse into ``following``: the list is in reverse manifest
        order, so this keeps the one declared first, the only one that could ever be tried
        (spec 3.3, Oddity O4)."""
        return following if isinstance(following, CatchAllRule) else None

    def match(self, request: RequestView) -> Decision:
        """Spec 4.5: always matches."""
        target = None
        if self.target_domain is not None:
            target = (
                "https://"
                + self.target_domain
                + "".join("/" + query_escape(segment) for segment in request.segments)
            )
            if request.parsed_query:
                target += "?" + render_query(request.parsed_query)
        capture: Capture = {
            "kind": "catchall",
            "package": self.package_id,
            "variables": {},
            "target": target,
        }
        if target is None:
            return Respond(200, kind="catchall", captures=(capture,))
        return Redirect(target, kind="catchall", captures=(capture,))


def parse_file_v1(fields: Fields) -> Rule:
    """Compile a ``file-v1`` manifest rule (spec 2.3)."""
    _read_unused(fields)
    return FileV1Rule(
        domain=fields.string("domain"),
        package_id=fields.string("package-id"),
        incoming=_template(fields, "incoming-path"),
        outgoing=_outgoing(fields),
    )


def parse_file_v2(fields: Fields) -> Rule:
    """Compile a ``file-v2`` manifest rule (spec 2.4, section 7)."""
    _read_unused(fields)
    source = fields.string("incoming-path")
    try:
        regex = re.compile(translate_pcre(source.strip()), re.ASCII)
    except re.error as error:
        raise fields.error("incoming-path", f"invalid regular expression: {error}") from error
    return FileV2Rule(
        domain=fields.string("domain"),
        package_id=fields.string("package-id"),
        source=source,
        regex=regex,
        outgoing=_outgoing(fields),
    )


def parse_catch_all(fields: Fields) -> Rule:
    """Compile a ``catch-all-v1`` manifest rule (spec 2.6)."""
    _read_unused(fields)
    return CatchAllRule(
        domain=fields.string("domain"),
        package_id=fields.string("package-id"),
        target_domain=fields.optional_string("redirect-target-domain"),
    )


def _template(fields: Fields, key: str) -> UriTemplate:
    text = fields.string(key)
    try:
        return parse_template(text)
    except ValueError as error:
        raise fields.error(key, f"invalid URI template: {error}") from error


def _outgoing(fields: Fields) -> UriTemplate | None:
    """The outgoing template; missing is accepted as null (design stance on Oddity O21)."""
    if fields.optional_string("outgoing-url") is None:
        return None
    return _template(fields, "outgoing-url")


def _read_unused(fields: Fields) -> None:
    for key in _UNUSED_KEYS:
        fields.optional_string(key)


def _group_values(found: re.Match[str]) -> dict[str, str]:
    """Named groups as the PCRE binding reports them (spec 7).

    A group that did not take part is ``""`` when a higher-numbered group did, else absent.
    """
    highest = next((i for i in range(found.re.groups, 0, -1) if found.start(i) != -1), 0)
    values: dict[str, str] = {}
    for name, index in sorted(found.re.groupindex.items(), key=lambda item: item[1]):
        text = found.group(index)
        if text is not None:
            values[name] = text
        elif index < highest:
            values[name] = ""
    return values


def _file_outcome(
    package_id: str,
    outgoing: UriTemplate | None,
    variables: dict[str, str],
    request: RequestView,
    *,
    with_body: bool,
) -> Decision | None:
    """Redirect to the expanded outgoing URL, or 200 without one; ``None`` if it cannot expand
    or captured values put dot-segments into its path (:func:`leaves_prefix`)."""
    target = None
    if outgoing is not None:
        expanded = outgoing.expand(variables)
        if expanded is None or (outgoing.has_expressions and leaves_prefix(expanded)):
            return None
        target = forward_query(expanded, request.parsed_query)
    base: Capture = {
        "kind": "file",
        "package": package_id,
        "variables": dict(variables),
        "target": target,
    }
    try:
        objects = parse_json_objects(request.body, BODY_LIMIT, MAX_BODY_EVENTS) if with_body else []
    except TooDeep:
        objects = []  # the download is answered; a body it cannot read adds no events
    captures = tuple({**base, "body_variables": obj} for obj in objects) or (base,)
    if target is None:
        return Respond(200, kind="file", captures=captures)
    return Redirect(target, kind="file", captures=captures)
