"""Docker image patterns of docker-v2 rules (spec section 8), compiled at load time.

A pattern is ``/``-separated segments; a segment is a sequence of ``*`` (any text within
the segment), literal runs (``\\*``, ``\\{``, ``\\}``, ``\\,`` escape the special
characters) and ``{alt1,alt2,...}`` groups whose alternatives are sequences themselves.
Each segment compiles to one anchored regular expression.

Unlike Haskell (Oddity O12) a pattern with trailing text the grammar cannot use
(``library/*,foo``, ``a}b``) is rejected instead of silently truncated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

_ESCAPABLE: Final = frozenset("*{},")
_SPECIAL: Final = frozenset("*{},/\\")


class _Parser:
    """Recursive descent over the pattern text, producing regex source per segment."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def _fail(self, reason: str) -> ValueError:
        found = self._peek()
        where = "end of pattern" if found is None else repr(found)
        return ValueError(f"position {self.pos} ({where}): {reason}")

    def pattern(self) -> list[str]:
        segments = [self._sequence("empty segment")]
        while self._peek() == "/":
            self.pos += 1
            segments.append(self._sequence("empty segment"))
        if self.pos < len(self.text):
            raise self._fail("unexpected trailing text")
        return segments

    def _sequence(self, empty_reason: str) -> str:
        parts: list[str] = []
        while (char := self._peek()) is not None and char not in "},/":
            if char == "*":
                self.pos += 1
                parts.append(".*")
            elif char == "{":
                parts.append(self._alternatives())
            else:
                parts.append(re.escape(self._literal()))
        if not parts:
            raise self._fail(empty_reason)
        return "".join(parts)

    def _literal(self) -> str:
        chars: list[str] = []
        while (char := self._peek()) is not None:
            if char == "\\":
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if escaped not in _ESCAPABLE:
                    raise self._fail("invalid escape (only \\*, \\{, \\}, \\, are allowed)")
                chars.append(escaped)
                self.pos += 2
            elif char in _SPECIAL:
                break
            else:
                chars.append(char)
                self.pos += 1
        return "".join(chars)

    def _alternatives(self) -> str:
        opened = self.pos
        self.pos += 1
        alternatives = [self._sequence("empty alternative")]
        while self._peek() == ",":
            self.pos += 1
            alternatives.append(self._sequence("empty alternative"))
        if self._peek() != "}":
            raise self._fail(f"expected ',' or '}}' to close the '{{' opened at position {opened}")
        self.pos += 1
        return "(?:" + "|".join(alternatives) + ")"


class ImagePattern:
    """A compiled image pattern; :meth:`matches` tests decoded image segments."""

    __slots__ = ("_segments", "source")

    def __init__(self, source: str) -> None:
        """Compile ``source``; raise ``ValueError`` naming the position of the first error."""
        self.source = source
        self._segments = tuple(
            re.compile(segment, re.DOTALL) for segment in _Parser(source).pattern()
        )

    def matches(self, image: Sequence[str]) -> bool:
        """True iff ``image`` has as many segments as the pattern and each one matches whole."""
        return len(image) == len(self._segments) and all(
            regex.fullmatch(segment) is not None
            for regex, segment in zip(self._segments, image, strict=True)
        )

    def __repr__(self) -> str:
        return f"ImagePattern({self.source!r})"
