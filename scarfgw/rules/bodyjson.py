"""Parse a sequence of JSON texts from a request body prefix (spec section 12)."""

from __future__ import annotations

import json
from typing import Any, Final

_WHITESPACE: Final = " \t\n\r\x0b\x0c\u00a0"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json_objects(body: bytes, limit_bytes: int = 256, max_objects: int = 10) -> list[dict]:
    """Objects found in the first ``limit_bytes`` of ``body``, at most ``max_objects``.

    Values are read one after another (adjacent or whitespace separated); non-objects are
    skipped; parsing stops at the first syntax error, keeping what was collected, so an
    object cut by the byte limit is dropped.
    """
    text = body[:limit_bytes].decode("utf-8", "replace")
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
    """``(True, value)`` if ``body`` is exactly one JSON value (whitespace around allowed)."""
    try:
        return True, _DECODER.decode(body.decode("utf-8"))
    except ValueError:
        return False, None
