"""docker-v1 / docker-v2 rules (spec 2.1, 2.2, 3.3, 4.1), without sockets."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from scarfgw.rules.base import Rule
from scarfgw.rules.decision import Proxy, Redirect, Respond
from scarfgw.rules.docker import (
    DockerV1Rule,
    is_redirect_capable,
    parse_docker_v1,
    parse_docker_v2,
    parse_image_request,
    token_path,
)
from scarfgw.rules.fields import Fields, RuleError
from scarfgw.rules.request import Headers, RequestView
from scarfgw.rules.router import Router

DOMAIN = "cr.example.com"


def v1(image: str = "library/hello", /, **extra: Any) -> Rule:
    data = {
        "type": "docker-v1",
        "domain": DOMAIN,
        "repository-name": image,
        "registry": "ghcr.io",
        "package-id": "pkg-" + image,
        **extra,
    }
    return parse_docker_v1(Fields(data, "rules[0]"))


def v2(pattern: str = "library/*", /, **extra: Any) -> Rule:
    data = {
        "type": "docker-v2",
        "domain": DOMAIN,
        "pattern": pattern,
        "registry": "ghcr.io",
        "rule-id": "rule-1",
        **extra,
    }
    return parse_docker_v2(Fields(data, "rules[0]"))


def request(
    path: str,
    method: str = "GET",
    query: str | None = None,
    user_agent: str | None = "Docker-Client",
    **headers: str,
) -> RequestView:
    pairs = [(name.replace("_", "-"), value) for name, value in headers.items()]
    if user_agent is not None:
        pairs.append(("User-Agent", user_agent))
    return RequestView(method, DOMAIN, path, query, Headers(pairs))


def only_capture(decision: Redirect | Respond | Proxy | None) -> dict[str, Any]:
    assert decision is not None
    assert len(decision.captures) == 1
    return decision.captures[0]


# --- parsing ---------------------------------------------------------------------------


def test_registry_hub_is_sanitised_only_exactly() -> None:
    decision = v1(registry="registry.hub.docker.com").match(
        request("/v2/library/hello/manifests/1")
    )
    assert isinstance(decision, Redirect)
    assert decision.location == "https://registry-1.docker.io/v2/library/hello/manifests/1"
    assert only_capture(decision)["backend"] == "registry-1.docker.io"
    kept = v1(registry="docker.io").match(request("/v2/library/hello/manifests/1"))
    assert isinstance(kept, Redirect)
    assert kept.location.startswith("https://docker.io/")


def test_unused_allowed_keys_are_read() -> None:
    fields = Fields(
        {
            "type": "docker-v1",
            "domain": DOMAIN,
            "repository-name": "a",
            "registry": "r",
            "package-id": "p",
            "package-name": "n",
            "owner": "o",
            "surprise": 1,
        },
        "rules[0]",
    )
    parse_docker_v1(fields)
    assert fields.unused() == ["surprise"]
    v2_fields = Fields(
        {
            "type": "docker-v2",
            "domain": DOMAIN,
            "pattern": "a",
            "registry": "r",
            "rule-id": "x",
            "owner": "o",
        },
        "rules[1]",
    )
    parse_docker_v2(v2_fields)
    assert v2_fields.unused() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "pass-through"), ("pass-through", "pass-through"), ("rewrite", "rewrite")],
)
def test_token_realm_is_passed_to_the_proxy(value: str | None, expected: str) -> None:
    extra = {} if value is None else {"token-realm": value}
    for rule in (v1(**extra), v2(**extra)):
        decision = rule.match(request("/v2/library/hello/manifests/1", user_agent="curl/8"))
        assert isinstance(decision, Proxy)
        assert decision.backend == "ghcr.io"
        assert decision.kind == "docker"
        assert decision.rewrite_token_realm == (expected == "rewrite")


@pytest.mark.parametrize("user_agent", ["docker/27.0", "skopeo/1.9.3"])
def test_token_endpoint_is_proxied_for_rewrite_rules_only(user_agent: str) -> None:
    own = token_path("ghcr.io")
    assert own.startswith("/v2/token/") and "ghcr" not in own
    for rule in (v1(**{"token-realm": "rewrite"}), v2(**{"token-realm": "rewrite"})):
        decision = rule.match(request(own, query="scope=x", user_agent=user_agent))
        assert decision == Proxy(
            backend="ghcr.io", kind="docker",
            rewrite_token_realm=True, token_endpoint=True,
        )
        assert rule.match(request("/v2/token", user_agent=user_agent)) is None
    assert v1().match(request(own, user_agent=user_agent)) is None


def test_each_rewritten_registry_of_a_domain_has_its_own_token_endpoint() -> None:
    hub = v1(**{"token-realm": "rewrite", "registry": "registry-1.docker.io"})
    ghcr = v2(**{"token-realm": "rewrite", "registry": "ghcr.io"})
    router = Router([hub, ghcr])
    for registry in ("registry-1.docker.io", "ghcr.io"):
        decision = router.route(request(token_path(registry), user_agent="skopeo/1.9.3"))
        assert isinstance(decision, Proxy) and decision.backend == registry


@pytest.mark.parametrize("value", ["Rewrite", "", 3])
def test_token_realm_rejects_other_values(value: object) -> None:
    with pytest.raises(RuleError) as info:
        v1(**{"token-realm": value})
    assert info.value.path == "rules[0].token-realm"


def test_missing_and_mistyped_keys() -> None:
    with pytest.raises(RuleError, match=r"rules\[0\]\.package-id: required key is missing"):
        parse_docker_v1(
            Fields({"domain": DOMAIN, "repository-name": "a", "registry": "r"}, "rules[0]")
        )
    with pytest.raises(RuleError, match=r"rules\[0\]\.always-proxy"):
        v1(**{"always-proxy": "yes"})
    with pytest.raises(RuleError, match=r"rules\[0\]\.pattern: required key is missing"):
        parse_docker_v2(Fields({"domain": DOMAIN, "registry": "r", "rule-id": "x"}, "rules[0]"))


def test_pattern_with_trailing_garbage_is_rejected() -> None:
    with pytest.raises(RuleError) as info:
        v2("library/*,foo")
    assert info.value.path == "rules[0].pattern"
    assert "position 9 (',')" in info.value.reason


# --- matching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        (
            ("v2", "library", "hello-world", "tags", "list"),
            (("library", "hello-world"), "tag", "list"),
        ),
        (("v2", "a", "b", "blobs", "uploads", ""), (("a", "b"), "blob", "uploads")),
        (("v2", "a", "manifests", "blobs", "x"), (("a",), "manifest", "blobs")),
        (("v2", "a", "b", "manifests"), None),
        (("v3", "a", "manifests", "x"), None),
        (("v2",), None),
        ((), None),
        (("v2", "manifests", "x"), ((), "manifest", "x")),
    ],
)
def test_parse_image_request(
    segments: tuple[str, ...], expected: tuple[tuple[str, ...], str, str] | None
) -> None:
    assert parse_image_request(segments) == expected


@pytest.mark.parametrize(
    ("user_agent", "capable"),
    [
        ("docker/27.0 go/go1.22", True),
        ("Docker/27.0", False),
        ("foo Docker-Client/19.03 bar", True),
        ("docker-client", False),
        ("containerd/1.4.9", True),
        ("containerd/1.5.5+unknown", True),
        ("containerd/1.6.21", True),
        ("containerd/1.7.0", False),
        ("containerd/1.5.4", False),
        ("Watchtower (Docker)", True),
        ("Watchtower (Docker) 1.0", False),
        ("crio", False),
        ("podman/4", False),
        ("curl/8.0", False),
        (None, False),
    ],
)
def test_redirect_capable_user_agents(user_agent: str | None, capable: bool) -> None:
    assert is_redirect_capable(user_agent) is capable
    decision = v1().match(request("/v2/library/hello/manifests/1", user_agent=user_agent))
    assert isinstance(decision, Redirect if capable else Proxy)


def test_redirect_drops_the_query_and_keeps_the_raw_path() -> None:
    decision = v1("library/he llo").match(
        request("/v2/library/he%20llo/manifests/sha256:abc", query="x=1")
    )
    assert isinstance(decision, Redirect)
    assert decision.status == 307
    assert decision.kind == "docker"
    assert decision.location == "https://ghcr.io/v2/library/he%20llo/manifests/sha256:abc"
    assert only_capture(decision) == {
        "kind": "docker",
        "package": "pkg-library/he llo",
        "image": "library/he llo",
        "reference": "sha256:abc",
        "backend": "ghcr.io",
        "auto_create_rule": None,
        "object": "manifest",
        "pull": True,
    }


def test_registry_port_is_kept_in_redirects() -> None:
    decision = v1(registry="localhost:5000").match(request("/v2/library/hello/blobs/sha"))
    assert isinstance(decision, Redirect)
    assert decision.location == "https://localhost:5000/v2/library/hello/blobs/sha"


@pytest.mark.parametrize(
    ("authorization", "proxied"),
    [
        ("Basic ZGVtbzpwQDU1dzByZA==", True),
        ("Basicx", True),
        ("basic abc", False),
        ("Bearer abc", False),
    ],
)
def test_basic_auth_is_proxied(authorization: str, proxied: bool) -> None:
    decision = v1().match(request("/v2/library/hello/manifests/1", Authorization=authorization))
    assert isinstance(decision, Proxy if proxied else Redirect)


def test_always_proxy_wins_over_a_redirect_capable_client() -> None:
    decision = v2(**{"always-proxy": True}).match(request("/v2/library/x/manifests/1"))
    assert isinstance(decision, Proxy)
    assert only_capture(decision)["auto_create_rule"] == "rule-1"
    assert only_capture(decision)["package"] is None


@pytest.mark.parametrize(
    ("method", "path", "obj", "pull"),
    [
        ("GET", "/v2/library/hello/manifests/1", "manifest", True),
        ("HEAD", "/v2/library/hello/manifests/1", "manifest", False),
        ("POST", "/v2/library/hello/manifests/1", "manifest", False),
        ("GET", "/v2/library/hello/blobs/sha256:1", "blob", False),
        ("GET", "/v2/library/hello/tags/list", "tag", False),
    ],
)
def test_object_and_pull(method: str, path: str, obj: str, pull: bool) -> None:
    for rule in (v1(), v2()):
        capture = only_capture(rule.match(request(path, method=method)))
        assert (capture["object"], capture["pull"]) == (obj, pull)


@pytest.mark.parametrize("user_agent", ["Docker-Client", "crio"])
def test_catalog_is_a_local_404_with_an_empty_capture(user_agent: str) -> None:
    for rule in (v1("other/image"), v2("nothing")):
        decision = rule.match(request("/v2/_catalog", query="n=1", user_agent=user_agent))
        assert isinstance(decision, Respond)
        assert (decision.status, decision.headers, decision.body) == (404, (), b"")
        assert only_capture(decision) == {
            "kind": "docker",
            "package": None,
            "image": "",
            "reference": "",
            "backend": "ghcr.io",
            "auto_create_rule": None,
            "object": None,
            "pull": False,
        }


def test_api_root_is_answered_by_any_docker_rule() -> None:
    for rule in (v1("other/image"), v2("nothing")):
        redirect = rule.match(request("/v2/"))
        assert isinstance(redirect, Redirect)
        assert redirect.location == "https://ghcr.io/v2/"
        assert only_capture(redirect)["image"] == ""
        assert only_capture(redirect)["object"] is None
        assert isinstance(rule.match(request("/v2/", user_agent=None)), Proxy)
        assert rule.match(request("/v2")) is None


@pytest.mark.parametrize(
    "path",
    [
        "/v2/library/other/manifests/1",
        "/v2/library/hello/manifests",
        "/v2/Library/hello/tags/x",
        "/v3/library/hello/manifests/1",
        "/library/hello/manifests/1",
    ],
)
def test_declines(path: str) -> None:
    assert v1().match(request(path)) is None


def test_v2_pattern_matching() -> None:
    rule = v2("library/*")
    assert rule.match(request("/v2/library/redis/manifests/1.0")) is not None
    assert rule.match(request("/v2/something/hello/manifests/1.0")) is None
    assert rule.match(request("/v2/library/a/b/manifests/1.0")) is None


# --- ordering and merging (spec 3.3, Oddity O5) ---------------------------------------


def route(rules: list[Rule], path: str, user_agent: str | None = "Docker-Client") -> Any:
    return Router(rules).route(request(path, user_agent=user_agent))


def test_same_registry_rules_merge_first_declared_package_wins() -> None:
    first = v1("library/a", **{"package-id": "first", "always-proxy": False})
    second = v1("library/a", **{"package-id": "second", "always-proxy": False})
    third = v1("library/b", **{"package-id": "third", "always-proxy": True})
    router = Router([first, second, third])
    (merged,) = router.table[DOMAIN]
    assert isinstance(merged, DockerV1Rule)
    assert dict(merged.images) == {("library", "a"): "first", ("library", "b"): "third"}
    decision = route([first, second, third], "/v2/library/a/manifests/1")
    # always-proxy of the last declared rule applies to every image of the registry
    assert isinstance(decision, Proxy)
    assert only_capture(decision)["package"] == "first"
    assert isinstance(route([first, second, third], "/v2/library/b/manifests/1"), Proxy)
    assert isinstance(route([third, second, first], "/v2/library/b/manifests/1"), Redirect)


def test_merge_keeps_the_first_rule_settings() -> None:
    first = v1("library/a", **{"token-realm": "rewrite"})
    second = v1("library/b")
    merged = first.merge(second)
    assert isinstance(first, DockerV1Rule)
    assert isinstance(merged, DockerV1Rule)
    assert merged.backend == first.backend
    assert set(merged.images) == {("library", "a"), ("library", "b")}
    assert first.merge(v1("library/c", registry="docker.io")) is None
    assert first.merge(v2()) is None
    assert v2().merge(v2()) is None


def test_identical_rules_collapse() -> None:
    assert len(Router([v1(), v1()]).table[DOMAIN]) == 1


def test_different_registries_last_declared_wins() -> None:
    ghcr = v1("library/a", **{"package-id": "ghcr"})
    hub = v1("library/a", registry="docker.io", **{"package-id": "hub"})
    decision = route([ghcr, hub], "/v2/library/a/manifests/1")
    assert isinstance(decision, Redirect)
    assert decision.location.startswith("https://docker.io/")
    # /v2/ goes to the first rule of the list, i.e. the last declared one
    root = route([ghcr, hub], "/v2/")
    assert isinstance(root, Redirect)
    assert root.location == "https://docker.io/v2/"


def test_v1_is_tried_before_v2() -> None:
    decision = route([v2("library/*"), v1("library/hello")], "/v2/library/hello/manifests/1")
    assert only_capture(decision)["package"] == "pkg-library/hello"


def test_yaml_keys_read_as_booleans_or_numbers_are_reported_as_text():
    rule = yaml.safe_load("{type: docker-v1, domain: d, repository-name: i, registry: r,"
                          " package-id: p, on: 1, 2: x}")
    fields = Fields(rule, "rules[0]")
    parse_docker_v1(fields)
    assert fields.unused() == ["2", "True"]
    with pytest.raises(RuleError, match="unknown key"):
        fields.reject_unknown()
