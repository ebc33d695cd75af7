"""RFC 6570 URI templates as the Haskell gateway (Burrito) handles them (spec section 5).

:func:`parse_template` accepts exactly the syntax of 5.2 and precomputes everything a
request needs: the expression list, the file-v1 sort key (3.3), the "captures query" test
(5.4) and the parts of the static check (4.2). :meth:`UriTemplate.match` is the reverse
matcher of 5.5: a generator-based backtracking search that yields candidates in Burrito's
preference order and keeps the first consistent one.

Expansion (5.3) is done here, not with the ``uritemplate`` package, because that package
deviates from Burrito: it leaves ``%XX`` sequences of ``{+x}``/``{#x}`` values unencoded
(Burrito always writes ``%`` as ``%25``), copies non-ASCII literal text unencoded, and accepts
templates that 5.2 rejects. Expanding from the expression list parsed once at load time also
keeps the per-request work free of any template parsing.

The module also holds the strict RFC 3986 splitter that static checks, the query test and
query forwarding (section 6) need.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, NamedTuple
from urllib.parse import quote

from scarfgw.rules.query import QueryEntry, parse_query, query_escape

_UNRESERVED: Final = frozenset(string.ascii_letters + string.digits + "-._~")
_RESERVED_TEXT: Final = ":/?#[]@!$&'()*+,;="
_ALLOWED: Final = _UNRESERVED | frozenset(_RESERVED_TEXT)
_HEX: Final = frozenset(string.hexdigits)
_NOT_LITERAL: Final = frozenset("\"'%<>\\^`{|}")
_RESERVED_OPERATORS: Final = frozenset("=,!@|")
_UCS_RANGES: Final = (
    (0xA0, 0xD7FF),
    (0xE000, 0xF8FF),
    (0xF900, 0xFDCF),
    (0xFDF0, 0xFFEF),
    *[(plane << 16, (plane << 16) + 0xFFFD) for plane in range(1, 14)],
    (0xE1000, 0xEFFFD),
    (0xF0000, 0xFFFFD),
    (0x100000, 0x10FFFD),
)
"""RFC 6570 ``ucschar`` and ``iprivate``: the non-ASCII characters allowed in literals."""

_VARSPEC: Final = re.compile(
    r"(?P<name>(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})+(?:\.(?:[A-Za-z0-9_]|%[0-9A-Fa-f]{2})+)*)"
    r"(?:(?P<explode>\*)|:(?P<prefix>[1-9][0-9]{0,3}))?"
)


@dataclass(frozen=True, slots=True)
class Operator:
    """How an operator expands and matches (the table of 5.3)."""

    prefix: str
    separator: str
    allowed: frozenset[str]
    safe: str
    """Characters ``quote`` keeps besides the unreserved ones."""
    named: bool
    equals_when_empty: bool


_OPERATORS: Final[dict[str, Operator]] = {
    "": Operator("", ",", _UNRESERVED, "", named=False, equals_when_empty=False),
    "+": Operator("", ",", _ALLOWED, _RESERVED_TEXT, named=False, equals_when_empty=False),
    "#": Operator("#", ",", _ALLOWED, _RESERVED_TEXT, named=False, equals_when_empty=False),
    ".": Operator(".", ".", _UNRESERVED, "", named=False, equals_when_empty=False),
    "/": Operator("/", "/", _UNRESERVED, "", named=False, equals_when_empty=False),
    ";": Operator(";", ";", _UNRESERVED, "", named=True, equals_when_empty=False),
    "?": Operator("?", "&", _UNRESERVED, "", named=True, equals_when_empty=True),
    "&": Operator("&", "&", _UNRESERVED, "", named=True, equals_when_empty=True),
}


@dataclass(frozen=True, slots=True)
class VarSpec:
    """One variable of an expression: name as written, ``*`` modifier, ``:N`` prefix."""

    name: str
    explode: bool
    prefix: int | None


@dataclass(frozen=True, slots=True)
class Expression:
    """``{op var,...}`` with its operator resolved."""

    operator: Operator
    varspecs: tuple[VarSpec, ...]


Part = str | Expression
"""A literal (already in its expanded, percent-encoded form) or an expression."""

_Binding = tuple[str, int | None] | None
"""What a match bound to a name: ``(value, prefix length)``, or ``None`` for undefined."""

_State = dict[str, _Binding]


class UriParts(NamedTuple):
    """The components of an RFC 3986 URI reference (``None``: component absent)."""

    scheme: str | None
    authority: str | None
    path: str
    query: str | None
    fragment: str | None

    def render(self) -> str:
        """Recompose the reference (RFC 3986 section 5.3)."""
        return self.render_with_query(self.query)

    def render_with_query(self, query: str | None) -> str:
        """Recompose the reference with ``query`` in place of its own (cheaper than
        ``_replace``, which the compiled code would call as interpreted Python)."""
        text = "" if self.scheme is None else self.scheme + ":"
        if self.authority is not None:
            text += "//" + self.authority
        text += self.path
        if query is not None:
            text += "?" + query
        if self.fragment is not None:
            text += "#" + self.fragment
        return text


@dataclass(frozen=True, slots=True)
class UriTemplate:
    """A parsed template. Build it with :func:`parse_template`.

    ``sort_key``: the file-v1 key of spec 3.3. ``captures_query``: the test of 5.4.
    ``variables``: every variable name, in order of first appearance.
    """

    text: str
    parts: tuple[Part, ...]
    variables: tuple[str, ...]
    sort_key: tuple[str, ...]
    captures_query: bool
    _static_path: str | None
    _static_query: dict[str, str | None] | None
    _fast: tuple[re.Pattern[str], tuple[str, ...]] | None = None

    @property
    def has_expressions(self) -> bool:
        """Whether the template contains at least one expression."""
        return bool(self.variables)

    def expand(self, values: dict[str, str]) -> str | None:
        """RFC 6570 expansion (5.3); ``None`` if a variable has no value in ``values``."""
        return _expand_parts(self.parts, values)

    def match(self, subject: str) -> dict[str, str] | None:
        """The first consistent match of 5.5: defined variables and their decoded values.

        ``None`` when the template does not match; ``{}`` when it matched without
        defining any variable.
        """
        if self._fast is not None and "%" not in subject:
            pattern, names = self._fast
            found = pattern.fullmatch(subject)
            return None if found is None else dict(zip(names, found.groups(), strict=True))
        state = next(_match_parts(self.parts, 0, subject, 0, {}), None)
        if state is None:
            return None
        return {name: bound[0] for name, bound in state.items() if bound is not None}

    def static_check(self, raw_path: str, parsed_query: Sequence[QueryEntry]) -> bool:
        """Spec 4.2 static_check against a request's raw path and parsed query."""
        if self._static_path is None or self._static_path != raw_path:
            return False
        if self._static_query is None:
            return True
        request = dict(parsed_query)
        return all(
            name in request and request[name] == value for name, value in self._static_query.items()
        )


def parse_template(text: str) -> UriTemplate:
    """Parse and validate ``text`` (5.2); raise ``ValueError`` naming the offending offset."""
    parts: list[Part] = []
    literal: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "{":
            end = text.find("}", position + 1)
            if end == -1:
                raise ValueError(f"expression opened at offset {position} is never closed")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_parse_expression(text[position + 1 : end], position))
            position = end + 1
        elif char == "%":
            escape = text[position : position + 3]
            if len(escape) != 3 or not _HEX.issuperset(escape[1:]):
                raise ValueError(f"'%' at offset {position} is not followed by two hex digits")
            literal.append(escape)
            position += 3
        elif _is_literal_char(char):
            literal.append(char if char in _ALLOWED else quote(char, safe=""))
            position += 1
        else:
            raise ValueError(f"character {char!r} at offset {position} is not allowed")
    if literal:
        parts.append("".join(literal))
    return _build(text, tuple(parts))


@lru_cache(maxsize=4096)
def parse_absolute_uri(text: str) -> UriParts | None:
    """Split an absolute URI (RFC 3986 ``URI``); ``None`` if ``text`` is not one.

    Remembers recent answers: every redirect of a popular file parses the same target.
    """
    return _split(_ABSOLUTE_URI, text)


def parse_relative_ref(text: str) -> UriParts | None:
    """Split a relative reference (RFC 3986 ``relative-ref``); ``None`` if it is not one."""
    return _split(_RELATIVE_REF, text)


def _build(text: str, parts: tuple[Part, ...]) -> UriTemplate:
    variables: dict[str, None] = {}
    for part in parts:
        if isinstance(part, Expression):
            variables.update((spec.name, None) for spec in part.varspecs)
    names = tuple(variables)
    empty = _expand_defined(parts, dict.fromkeys(names, ""))
    named_text = _expand_defined(parts, {name: name for name in names})
    named = parse_absolute_uri(named_text) or parse_relative_ref(named_text)
    captures_query = named is not None and bool(named.query)
    static_path: str | None = None
    static_query: dict[str, str | None] | None = None
    if not names:
        static = parse_relative_ref(empty)
        if static is not None:
            static_path = static.path
            if captures_query:
                static_query = dict(parse_query(static.query or ""))
    return UriTemplate(
        text=text,
        parts=parts,
        variables=names,
        sort_key=tuple(piece for piece in empty.split("/") if piece),
        captures_query=captures_query,
        _static_path=static_path,
        _static_query=static_query,
        _fast=_fast_matcher(parts),
    )


_FAST_CLASSES: Final = {
    id(_OPERATORS[""]): "[A-Za-z0-9._~-]",
    id(_OPERATORS["+"]): "[A-Za-z0-9._~:/?#\\[\\]@!$&'()*+,;=-]",
}


def _fast_matcher(parts: tuple[Part, ...]) -> tuple[re.Pattern[str], tuple[str, ...]] | None:
    """A regular expression that finds the same first match as :func:`_match_parts` for
    subjects without ``%`` escapes, or ``None`` when the template is outside its reach.

    It covers literals and ``{x}`` / ``{+x}`` expressions of one variable (no modifier, each
    name once). For such a variable 5.5 tries non-empty values shortest first, each with a
    following ``,`` separator consumed before without, then the empty value likewise; the
    "undefined" candidate consumes what the empty one does and so never comes first. That is
    exactly the backtracking order of ``(class+?|),?``.
    """
    pieces: list[str] = []
    names: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(re.escape(part))
            continue
        value_class = _FAST_CLASSES.get(id(part.operator))
        if value_class is None or len(part.varspecs) != 1:
            return None
        spec = part.varspecs[0]
        if spec.explode or spec.prefix is not None or spec.name in names:
            return None
        pieces.append(f"({value_class}+?|),?")
        names.append(spec.name)
    return re.compile("".join(pieces)), tuple(names)


def _is_literal_char(char: str) -> bool:
    code = ord(char)
    if code <= 0x7E:
        return code >= 0x21 and char not in _NOT_LITERAL
    return any(low <= code <= high for low, high in _UCS_RANGES)


def _parse_expression(body: str, offset: int) -> Expression:
    if not body:
        raise ValueError(f"empty expression at offset {offset}")
    operator = body[0]
    if operator in _RESERVED_OPERATORS:
        raise ValueError(f"reserved operator {operator!r} in expression at offset {offset}")
    if operator in _OPERATORS:
        body = body[1:]
    else:
        operator = ""
    varspecs: list[VarSpec] = []
    for spec in body.split(","):
        found = _VARSPEC.fullmatch(spec)
        if found is None:
            raise ValueError(f"invalid variable {spec!r} in expression at offset {offset}")
        prefix = found.group("prefix")
        varspecs.append(
            VarSpec(
                name=found.group("name"),
                explode=found.group("explode") is not None,
                prefix=None if prefix is None else int(prefix),
            )
        )
    return Expression(_OPERATORS[operator], tuple(varspecs))


def _expand_parts(parts: tuple[Part, ...], values: dict[str, str]) -> str | None:
    pieces: list[str] = []
    for part in parts:
        expanded = part if isinstance(part, str) else _expand_expression(part, values)
        if expanded is None:
            return None
        pieces.append(expanded)
    return "".join(pieces)


def _expand_defined(parts: tuple[Part, ...], values: dict[str, str]) -> str:
    """Expansion when ``values`` covers every variable (so it cannot fail)."""
    expanded = _expand_parts(parts, values)
    assert expanded is not None
    return expanded


def _expand_expression(expression: Expression, values: dict[str, str]) -> str | None:
    operator = expression.operator
    specs = expression.varspecs
    if len(specs) == 1:  # the common ``{name}``: no list to join
        value = values.get(specs[0].name)
        return None if value is None else operator.prefix + _expand_value(operator, specs[0],
                                                                         value)
    items: list[str] = []
    for spec in specs:
        value = values.get(spec.name)
        if value is None:
            return None
        items.append(_expand_value(operator, spec, value))
    return operator.prefix + operator.separator.join(items)


def _expand_value(operator: Operator, spec: VarSpec, value: str) -> str:
    if spec.prefix is not None:
        value = value[: spec.prefix]
    encoded = query_escape(value, operator.safe)
    if not operator.named:
        return encoded
    if encoded or operator.equals_when_empty:
        return f"{spec.name}={encoded}"
    return spec.name


# --- reverse matching (5.5) ---------------------------------------------------------------


def _match_parts(
    parts: tuple[Part, ...], index: int, subject: str, position: int, state: _State
) -> Iterator[_State]:
    if index == len(parts):
        if position == len(subject):
            yield state
        return
    part = parts[index]
    if isinstance(part, str):
        if subject.startswith(part, position):
            yield from _match_parts(parts, index + 1, subject, position + len(part), state)
        return
    for end, matched in _match_expression(part, subject, position, state):
        yield from _match_parts(parts, index + 1, subject, end, matched)


def _match_expression(
    expression: Expression, subject: str, position: int, state: _State
) -> Iterator[tuple[int, _State]]:
    operator = expression.operator
    if not operator.prefix:
        for end, matched, _ in _match_list(expression, 0, subject, position, state, False):
            yield end, matched
        return
    if subject.startswith(operator.prefix, position):
        for end, matched, defined in _match_list(
            expression, 0, subject, position + 1, state, False
        ):
            if defined:
                yield end, matched
    undefined = _undefine(state, expression.varspecs)
    if undefined is not None:
        yield position, undefined


def _match_list(
    expression: Expression,
    index: int,
    subject: str,
    position: int,
    state: _State,
    defined: bool,
) -> Iterator[tuple[int, _State, bool]]:
    specs = expression.varspecs
    if index == len(specs):
        yield position, state, defined
        return
    spec = specs[index]
    separator = expression.operator.separator
    for end, binding in _match_value(expression.operator, spec, subject, position):
        bound = _bind(state, spec.name, binding)
        if bound is None:
            continue
        if subject.startswith(separator, end):
            yield from _match_list(expression, index + 1, subject, end + 1, bound, True)
        rest = _undefine(bound, specs[index + 1 :])
        if rest is not None:
            yield end, rest, True
    skipped = _bind(state, spec.name, None)
    if skipped is not None:
        yield from _match_list(expression, index + 1, subject, position, skipped, defined)


def _match_value(
    operator: Operator, spec: VarSpec, subject: str, position: int
) -> Iterator[tuple[int, _Binding]]:
    if not operator.named:
        yield from _match_variable(spec, operator.allowed, subject, position)
        return
    if not subject.startswith(spec.name, position):
        return
    position += len(spec.name)
    has_equals = subject.startswith("=", position)
    if has_equals:
        yield from _match_variable(spec, operator.allowed, subject, position + 1)
    if not operator.equals_when_empty:
        yield position, ("", None)


def _match_variable(
    spec: VarSpec, allowed: frozenset[str], subject: str, position: int
) -> Iterator[tuple[int, _Binding]]:
    if spec.explode:
        return
    for end, value in _values(allowed, subject, position):
        yield end, (value, spec.prefix)


MAX_RUNS: Final = 64
"""Alternations of plain and percent-encoded text a value may have (``a%20b`` has three).

The candidates are enumerated recursively, one level per run: without a bound a 16 KiB
path of ``a%41a%41...`` costs thousands of nested generators (Python stops at its recursion
limit; compiled code has no such limit and may exhaust the C stack) and quadratic time.
A longer value is not matched (the rule declines).
"""


def _values(allowed: frozenset[str], subject: str, position: int) -> Iterator[tuple[int, str]]:
    """Candidate values at ``position`` in preference order, the empty value last."""
    if position < len(subject) and subject[position] in allowed:
        yield from _unencoded_run(allowed, subject, position, "", 1)
    elif _is_escape(subject, position):
        yield from sorted(_escape_run(allowed, subject, position, "", 1))
    yield position, ""


def _unencoded_run(
    allowed: frozenset[str], subject: str, start: int, decoded: str, runs: int
) -> Iterator[tuple[int, str]]:
    end = start
    while end < len(subject) and subject[end] in allowed:
        end += 1
        value = decoded + subject[start:end]
        if runs < MAX_RUNS and _is_escape(subject, end):
            yield from _escape_run(allowed, subject, end, value, runs + 1)
        yield end, value


def _escape_run(
    allowed: frozenset[str], subject: str, start: int, decoded: str, runs: int
) -> Iterator[tuple[int, str]]:
    end = start
    octets = bytearray()
    while _is_escape(subject, end):
        octets.append(int(subject[end + 1 : end + 3], 16))
        end += 3
        try:
            value = decoded + octets.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if runs < MAX_RUNS and end < len(subject) and subject[end] in allowed:
            yield from _unencoded_run(allowed, subject, end, value, runs + 1)
        yield end, value


def _is_escape(subject: str, position: int) -> bool:
    return (
        subject.startswith("%", position)
        and position + 3 <= len(subject)
        and subject[position + 1] in _HEX
        and subject[position + 2] in _HEX
    )


def _bind(state: _State, name: str, binding: _Binding) -> _State | None:
    """Add a binding; ``None`` when it contradicts an earlier one (Burrito's ``combine``)."""
    if name not in state:
        return {**state, name: binding}
    previous = state[name]
    if previous is None or binding is None:
        return state if previous is None and binding is None else None
    old_value, old_prefix = previous
    new_value, new_prefix = binding
    if old_prefix is None and new_prefix is None:
        return state if old_value == new_value else None
    if new_prefix is None:
        return {**state, name: binding} if old_value == new_value[:old_prefix] else None
    if old_prefix is None:
        return state if old_value[:new_prefix] == new_value else None
    common = min(old_prefix, new_prefix)
    if old_value[:common] != new_value[:common]:
        return None
    return {**state, name: binding} if new_prefix > old_prefix else state


def _undefine(state: _State | None, specs: Sequence[VarSpec]) -> _State | None:
    for spec in specs:
        if state is None:
            return None
        state = _bind(state, spec.name, None)
    return state


# --- RFC 3986 -----------------------------------------------------------------------------

_PCT: Final = r"%[0-9A-Fa-f]{2}"
_UNRESERVED_CLASS: Final = r"A-Za-z0-9\-._~"
_SUB_DELIMS: Final = r"!$&'()*+,;="
_PCHAR: Final = rf"(?:[{_UNRESERVED_CLASS}{_SUB_DELIMS}:@]|{_PCT})"
_SEGMENT_NZ_NC: Final = rf"(?:[{_UNRESERVED_CLASS}{_SUB_DELIMS}@]|{_PCT})+"
_QUERY: Final = rf"(?:{_PCHAR}|[/?])*"
_AUTHORITY: Final = (
    rf"(?:(?:[{_UNRESERVED_CLASS}{_SUB_DELIMS}:]|{_PCT})*@)?"
    rf"(?:\[(?P<ip>[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[{_UNRESERVED_CLASS}{_SUB_DELIMS}:]+)\]"
    rf"|(?:[{_UNRESERVED_CLASS}{_SUB_DELIMS}]|{_PCT})*)"
    r"(?::[0-9]*)?"
)
_PATH_TAIL: Final = rf"(?:/{_PCHAR}*)*"
_TAIL: Final = rf"(?:\?(?P<query>{_QUERY}))?(?:#(?P<fragment>{_QUERY}))?"
_ABSOLUTE_URI: Final = re.compile(
    rf"(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*):"
    rf"(?://(?P<authority>{_AUTHORITY})(?P<apath>{_PATH_TAIL})"
    rf"|(?P<path>/(?:{_PCHAR}+{_PATH_TAIL})?|{_PCHAR}+{_PATH_TAIL}|)){_TAIL}"
)
_RELATIVE_REF: Final = re.compile(
    rf"(?://(?P<authority>{_AUTHORITY})(?P<apath>{_PATH_TAIL})"
    rf"|(?P<path>/(?:{_PCHAR}+{_PATH_TAIL})?|{_SEGMENT_NZ_NC}{_PATH_TAIL}|)){_TAIL}"
)


def _split(pattern: re.Pattern[str], text: str) -> UriParts | None:
    found = pattern.fullmatch(text)
    if found is None:
        return None
    literal = found.group("ip")
    if literal is not None and not literal.startswith("v"):
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return None
    authority = found.group("authority")
    return UriParts(
        scheme=found.groupdict().get("scheme"),
        authority=authority,
        path=found.group("apath") if authority is not None else found.group("path"),
        query=found.group("query"),
        fragment=found.group("fragment"),
    )
