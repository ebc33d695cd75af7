"""Parse a sequence of JSON texts from a request body prefix (spec section 12).

A body nested deeper than :data:`MAX_DEPTH` arrays or objects is refused with
:class:`TooDeep` before it is decoded (the decoder recurses once per level: thousands of
levels would raise RecursionError).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Final

_WHITESPACE: Final = " \t\n\r\x0b\x0c\u00a0"
MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects accepted in a body."""
_STRING: Final = re.compile(r'"(?:[^"\\]++|\\.)*+"?')
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]++")
_DEPTH_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}


class TooDeep(ValueError):
    """A body nested deeper than :data:`MAX_DEPTH`; the message says so."""


def check_depth(text: str) -> None:
    """Raise :class:`TooDeep` when ``text`` nests arrays or objects (outside strings) deeper
    than :data:`MAX_DEPTH`; only a text with that many opening brackets is scanned."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if max(accumulate(_DEPTH_STEP[bracket] for bracket in brackets), default=0) > MAX_DEPTH:
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json_objects(body: bytes, limit_bytes: int = 256, max_objects: int = 10) -> list[dict]:
    """Objects found in the first ``limit_bytes`` of ``body``, at most ``max_objects``.

    Values are read one after another (adjacent or whitespace separated); non-objects are
    skipped; parsing stops at the first syntax error, keeping what was collected, so an
    object cut by the byte limit is dropped. Raises :class:`TooDeep`.
    """
    text = body[:limit_bytes].decode("utf-8", "replace")
    check_depth(text)
    found: list[dict] = []
    position = 0
    while len(found) < max_objects:
        while position < len(text) and text[position] in _WHITESPACE:
            position += 1
        if position >= len(text):
            break
        try:
            value, position = _DECODER.raw_decode(text, position)
        except ValueError:
            break
        if isinstance(value, dict):
            found.append(value)
    return found


def parse_single_json(body: bytes) -> tuple[bool, Any]:
    """``(True, value)`` if ``body`` is exactly one JSON value (whitespace around allowed).
    Raises :class:`TooDeep`."""
    try:
        text = body.decode("utf-8")
    except ValueError:
        return False, None
    check_depth(text)
    try:
        return True, _DECODER.decode(text)
    except ValueError:
        return False, None
