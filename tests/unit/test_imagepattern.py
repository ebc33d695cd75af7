"""Docker image patterns (spec section 8; trailing garbage rejected, design O12)."""

from __future__ import annotations

import pytest

from scarfgw.rules.imagepattern import ImagePattern


@pytest.mark.parametrize(
    ("pattern", "image", "expected"),
    [
        ("library/*", "library/hello", True),
        ("library/*", "library/hello{abc}", True),
        ("library/*", "library", False),
        ("library/*", "library/hello/world", False),
        ("library/*", "Library/x", False),
        ("library/*", "library/", True),
        ("l*n*k*er/d{1,2,3,4,5}", "linker/d5", True),
        ("l*n*k*er/d{1,2,3,4,5}", "linker/d6", False),
        ("lin{t, ker}", "lin ker", True),
        ("lin{t, ker}", "lint", True),
        ("lin{t, ker}", "linker", False),
        ("a{b,{c,d}e}", "ade", True),
        ("a{b,{c,d}e}", "ab", True),
        ("a{b,{c,d}e}", "ae", False),
        ("a{*x,y}", "azzzx", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("\\{\\,\\}", "{,}", True),
        ("a.b", "axb", False),
        ("a.b", "a.b", True),
        ("hello", "hello", True),
        ("hello", "hell", False),
        ("hello", "helloo", False),
        ("a/*/c", "a//c", True),
        ("*", "x\ny", True),
    ],
)
def test_matches(pattern: str, image: str, expected: bool) -> None:
    assert ImagePattern(pattern).matches(tuple(image.split("/"))) is expected


def test_zero_segments_never_match() -> None:
    assert not ImagePattern("*").matches(())


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "position 0 (end of pattern): empty segment"),
        ("/library", "position 0 ('/'): empty segment"),
        ("library/", "position 8 (end of pattern): empty segment"),
        ("a//b", "position 2 ('/'): empty segment"),
        ("{a,}", "position 3 ('}'): empty alternative"),
        ("{}", "position 1 ('}'): empty alternative"),
        ("library/*,foo", "position 9 (','): unexpected trailing text"),
        ("a}b", "position 1 ('}'): unexpected trailing text"),
        ("{a", "position 2 (end of pattern): expected ',' or '}' to close the '{' opened at"),
        ("x{a/b}", "position 3 ('/'): expected ',' or '}' to close the '{' opened at position 1"),
        ("a\\x", "position 1 ('\\\\'): invalid escape"),
        ("a\\", "position 1 ('\\\\'): invalid escape"),
    ],
)
def test_invalid_patterns_name_the_position(pattern: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ImagePattern(pattern)
    assert str(info.value).startswith(message)


def test_source_is_kept() -> None:
    assert ImagePattern("library/*").source == "library/*"
    assert repr(ImagePattern("a")) == "ImagePattern('a')"
