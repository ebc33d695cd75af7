"""The packument shell's pure parts: tarball rewriting, the bounded cache, JSON checks."""

from __future__ import annotations

import pytest

from scarfgw.gateway.packuments import (
    BackendAnswer,
    Packument,
    PackumentCache,
    parse_packument,
    rewrite_tarballs,
)

BASE = "https://registry.example.test/npm"
ORIGIN = "http://npm.example.test:8080"


def test_only_registry_layout_tarballs_under_the_backend_are_rewritten() -> None:
    document = {"name": "@acme/w", "versions": {
        "1.0.0": {"dist": {"tarball": f"{BASE}/@acme/w/-/w-1.0.0.tgz", "integrity": "sha512-x",
                           "shasum": "abc"}},
        "1.0.1": {"dist": {"tarball": "http://registry.example.test/npm/@acme/w/-/w-1.0.1.tgz"}},
        "1.0.2": {"dist": {"tarball": "https://cdn.example.test/w-1.0.2.tgz"}},
        "1.0.3": {"dist": {"tarball": f"{BASE}/@acme/w/-/sub/w-1.0.3.tgz"}},
        "1.0.4": {"dist": {}}, "1.0.5": "not an object", "1.0.6": {"dist": {"tarball": 7}},
    }}
    assert rewrite_tarballs(document, "@acme/w", BASE, ORIGIN) == 2
    versions = document["versions"]
    assert isinstance(versions, dict)
    assert versions["1.0.0"] == {"dist": {"tarball": f"{ORIGIN}/@acme/w/-/w-1.0.0.tgz",
                                          "integrity": "sha512-x", "shasum": "abc"}}
    assert versions["1.0.1"]["dist"]["tarball"] == f"{ORIGIN}/@acme/w/-/w-1.0.1.tgz"
    assert versions["1.0.2"]["dist"]["tarball"] == "https://cdn.example.test/w-1.0.2.tgz"
    assert versions["1.0.3"]["dist"]["tarball"] == f"{BASE}/@acme/w/-/sub/w-1.0.3.tgz"
    assert rewrite_tarballs({"versions": []}, "x", BASE, ORIGIN) == 0


def entry(size: int) -> Packument:
    return Packument(b"x" * size, b"application/json", b'"e"')


def test_cache_is_bounded_in_entries_and_bytes_least_recently_used_first() -> None:
    cache = PackumentCache(max_entries=3, max_bytes=400)
    for name in "abc":
        cache.put((name, False, ORIGIN), entry(100))
    assert cache.get(("a", False, ORIGIN)) is not None  # a is now the most recent
    cache.put(("d", False, ORIGIN), entry(100))
    assert cache.get(("b", False, ORIGIN)) is None and len(cache) == 3
    cache.put(("e", False, ORIGIN), entry(100))
    cache.put(("f", False, ORIGIN), entry(100))
    assert len(cache) == 3 and cache.bytes == 300
    cache.put(("big", False, ORIGIN), entry(101))  # over a quarter of max_bytes: not kept
    assert cache.get(("big", False, ORIGIN)) is None and cache.bytes == 300
    cache.put(("e", False, ORIGIN), entry(50))
    assert cache.bytes == 250
    cache.discard(("e", False, ORIGIN))
    assert cache.bytes == 200 and len(cache) == 2


def test_packument_etag_is_of_the_rewritten_body() -> None:
    assert entry(3).etag == Packument(b"xxx", b"", None).etag != entry(4).etag


@pytest.mark.parametrize(("body", "message"), [
    (b"<html>", "backend packument is not JSON"),
    (b"\xff\xfe", "backend packument is not JSON"),
    (b"[1]", "backend packument is not a JSON object"),
    (b'"text"', "backend packument is not a JSON object"),
])
def test_bodies_that_are_not_a_json_object_are_502(body: bytes, message: str) -> None:
    with pytest.raises(BackendAnswer) as error:
        parse_packument(body)
    assert (error.value.status, error.value.message) == (502, message)
