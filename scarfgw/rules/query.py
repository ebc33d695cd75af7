"""Query strings as http-types parses and renders them (spec 3.5, 4.5)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, unquote_plus

QueryEntry = tuple[str, str | None]
"""A query parameter: name and value; ``None`` when the piece had no ``=``."""

_SPLIT: Final = re.compile(r"[&;]")
_UNRESERVED_ONLY: Final = re.compile(r"[A-Za-z0-9._~-]*")


def _unquote_plus(text: str) -> str:
    """``unquote_plus``, skipped for text without ``%`` or ``+`` (most names and values)."""
    return unquote_plus(text) if "%" in text or "+" in text else text


def parse_query(raw_query: str) -> list[QueryEntry]:
    """Parse a raw query (with or without its leading ``?``) into ordered entries.

    Splits on ``&`` and ``;``; a piece without ``=`` has no value; ``+`` means space.
    An empty query gives ``[]``; empty pieces between separators give ``("", None)``.
    """
    if raw_query.startswith("?"):
        raw_query = raw_query[1:]
    if not raw_query:
        return []
    entries: list[QueryEntry] = []
    for piece in _SPLIT.split(raw_query) if ";" in raw_query else raw_query.split("&"):
        name, equals, value = piece.partition("=")
        entries.append((_unquote_plus(name), _unquote_plus(value) if equals else None))
    return entries


def query_escape(text: str, safe: str = "") -> str:
    """Percent-encode everything but ``A-Z a-z 0-9 - _ . ~`` and the characters of ``safe``
    (UTF-8, upper-case hex); unreserved-only text is returned without calling ``quote``
    (letters and digits alone without the regular expression, which costs more)."""
    if text.isalnum() and text.isascii():
        return text
    return text if _UNRESERVED_ONLY.fullmatch(text) else quote(text, safe=safe)


def render_query(entries: Iterable[QueryEntry]) -> str:
    """Render entries as ``name=value&name`` with :func:`query_escape` (no leading ``?``)."""
    rendered: list[str] = []
    for name, value in entries:
        rendered.append(query_escape(name) if value is None
                        else query_escape(name) + "=" + query_escape(value))
    return "&".join(rendered)
