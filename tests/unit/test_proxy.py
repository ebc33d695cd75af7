"""Pure helpers of the streaming proxy (header filtering) and of its registry behaviour
(redirects, token realms, Location rewrites)."""

from __future__ import annotations

import pytest

from scarfgw.gateway.proxy import UpstreamMap, connection_tokens
from scarfgw.gateway.registry import (
    TokenRealms,
    bearer_realm,
    followed_target,
    is_registry_location,
    public_location,
    replace_realm,
    token_url,
)


def test_connection_tokens_are_lower_cased_across_repeated_headers() -> None:
    values = [b"close, X-Secret", b" Keep-Alive ,"]
    assert connection_tokens(values) == {b"close", b"x-secret", b"keep-alive"}


@pytest.mark.parametrize(
    ("location", "followed"),
    [("/v2/a/manifests/1", True), ("https://r.test/v2", True), ("/v2", True),
     ("/v2x/a", False), ("https://cdn.test/blob?sig=1", False), ("/storage/v2/x", False)],
)
def test_registry_locations(location: str, followed: bool) -> None:
    assert is_registry_location(location) is followed


def test_upstream_map_defaults_to_https_of_the_backend() -> None:
    upstreams = UpstreamMap({"ghcr.io": "http://127.0.0.1:5000/"})
    assert upstreams.base_url("ghcr.io") == "http://127.0.0.1:5000"
    assert upstreams.base_url("quay.io:8443") == "https://quay.io:8443"


def test_bearer_realm_is_read_and_replaced_in_place() -> None:
    challenge = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"'
    assert bearer_realm(challenge) == "https://auth.example/token"
    assert replace_realm(challenge, "http://gw.test/v2/token") == (
        'Bearer realm="http://gw.test/v2/token",service="reg",scope="repository:a:pull"')


@pytest.mark.parametrize("challenge", ['Basic realm="registry"', "Bearer service=\"x\"", ""])
def test_no_bearer_realm(challenge: str) -> None:
    assert bearer_realm(challenge) is None


@pytest.mark.parametrize(
    ("realm", "query", "expected"),
    [("https://a/token", "scope=x", "https://a/token?scope=x"),
     ("https://a/token?x=1", "scope=y", "https://a/token?x=1&scope=y"),
     ("https://a/token", None, "https://a/token"),
     ("https://a/token", "", "https://a/token")],
)
def test_token_url(realm: str, query: str | None, expected: str) -> None:
    assert token_url(realm, query) == expected


def test_only_registry_redirects_are_followed_and_resolved_against_the_request() -> None:
    url = "http://127.0.0.1:5000/v2/a/manifests/1"
    assert followed_target(307, "/v2/b/manifests/1", url) == (
        "http://127.0.0.1:5000/v2/b/manifests/1")
    assert followed_target(301, "/v2/b/manifests/1", url) is None
    assert followed_target(307, "https://cdn.test/blob", url) is None


def test_relative_locations_name_the_public_backend() -> None:
    assert public_location(b"/v2/x/blobs/1", "ghcr.io") == b"https://ghcr.io/v2/x/blobs/1"
    assert public_location(b"https://cdn.test/b", "ghcr.io") == b"https://cdn.test/b"


def test_a_rewritten_challenge_names_the_gateway_and_the_real_realm_is_kept() -> None:
    realms = TokenRealms()
    own = realms.own_challenge(b'Bearer realm="https://auth.test/token",service="r"',
                               "ghcr.io", "https://cr.example.test")
    assert own.startswith(b'Bearer realm="https://cr.example.test/v2/token/')
    assert realms.known("ghcr.io") == "https://auth.test/token"
    assert realms.learn("other.test", [b"Basic realm=\"x\"", b'Bearer realm="https://a.test"']) == (
        "https://a.test")
