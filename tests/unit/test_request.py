"""The request view: headers built from wire pairs, lazy decoding, path segments."""

from __future__ import annotations

import pytest

from scarfgw.rules import request
from scarfgw.rules.request import Headers, RequestView, decode_segments

WIRE = [
    (b"Host", b"cr.example.test:8080"),
    (b"User-Agent", b"docker/27.0"),
    (b"Accept", b"application/vnd.oci.image.index.v1+json"),
    (b"X-Custom", b"caf\xe9"),
    (b"ACCEPT", b"application/vnd.docker.distribution.manifest.v2+json"),
    (b"accept", b"*/*"),
]


def test_from_pairs_is_case_insensitive_and_keeps_repeated_values_in_order() -> None:
    headers = Headers.from_pairs(WIRE)
    assert headers.get("host") == "cr.example.test:8080"
    assert headers.get_all("accept") == [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "*/*",
    ]
    assert headers.get("accept") == "application/vnd.oci.image.index.v1+json"
    assert headers.get("x-custom") == "café"  # latin-1
    assert "user-agent" in headers and "authorization" not in headers
    assert headers.get("authorization") is None and headers.get_all("authorization") == []
    assert dict(headers.items()) == {
        "host": ["cr.example.test:8080"],
        "user-agent": ["docker/27.0"],
        "accept": headers.get_all("accept"),
        "x-custom": ["café"],
    }


def test_from_pairs_agrees_with_the_str_constructor() -> None:
    text = Headers((name.decode("latin-1"), value.decode("latin-1")) for name, value in WIRE)
    assert dict(text.items()) == dict(Headers.from_pairs(WIRE).items())


def test_from_pairs_edge_cases() -> None:
    assert dict(Headers.from_pairs([]).items()) == {}
    headers = Headers.from_pairs([(b"X-Empty", b""), (b"x-empty", b"b"), (b"", b"nameless")])
    assert headers.get("x-empty") == "" and headers.get_all("x-empty") == ["", "b"]
    assert headers.get("") == "nameless"
    assert Headers.from_pairs(iter([(b"Host", b"a")])).get("host") == "a"


def test_from_pairs_values_are_decoded_once_and_only_when_asked() -> None:
    headers = Headers.from_pairs(WIRE)
    assert headers._values == {}
    first = headers.get_all("accept")
    assert headers.get_all("accept") is first
    assert set(headers._values) == {"accept"}


def test_header_name_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request, "_NAMES", {})
    monkeypatch.setattr(request, "_NAMES_LIMIT", 2)
    headers = Headers.from_pairs([(b"A", b"1"), (b"B", b"2"), (b"C", b"3"), (b"C", b"4")])
    assert request._NAMES == {b"A": "a", b"B": "b"}
    assert headers.get_all("c") == ["3", "4"]


def test_view_header_and_lazy_segments() -> None:
    view = RequestView("GET", "cr.example.test", "/v2/a%2Fb/manifests/latest", None,
                       Headers.from_pairs(WIRE))
    assert view.header("user-agent") == "docker/27.0" and view.header("dnt") is None
    assert view._segments is None
    assert view.segments == ("v2", "a/b", "manifests", "latest")
    assert view.segments is view.segments


@pytest.mark.parametrize(
    ("raw_path", "segments"),
    [
        ("", ()),
        ("/", ()),
        ("//", ("", "")),
        ("x", ("x",)),
        ("/a/", ("a", "")),
        ("/v2/library/hello/manifests/latest", ("v2", "library", "hello", "manifests", "latest")),
        ("/%76%32/x%2Fy", ("v2", "x/y")),
        ("/a+b/%zz/%ff", ("a+b", "%zz", "\ufffd")),
    ],
)
def test_decode_segments(raw_path: str, segments: tuple[str, ...]) -> None:
    assert decode_segments(raw_path) == segments
