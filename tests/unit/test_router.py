"""Spec 3.3/3.4: per-domain ordering, merging, first match, fallback 404."""

from __future__ import annotations

from typing import Any

from scarfgw.rules.decision import Redirect, Respond
from scarfgw.rules.manifest import parse_rules
from scarfgw.rules.request import Headers, RequestView, decode_segments, routing_host
from scarfgw.rules.router import REGISTRY_NOT_FOUND, Router


def view(path: str, host: str = "d.test", ua: str = "docker/27.0", method: str = "GET",
         query: str | None = None) -> RequestView:
    return RequestView(method, host, path, query, Headers([("User-Agent", ua)]))


def file_rule(incoming: str, outgoing: str, domain: str = "d.test") -> dict[str, Any]:
    return {"type": "file-v1", "domain": domain, "incoming-path": incoming,
            "outgoing-url": outgoing, "package-id": outgoing}


def router(*rules: dict[str, Any]) -> Router:
    return Router(parse_rules(list(rules), "rules"))


def test_file_templates_sort_by_descending_key_whatever_the_manifest_order() -> None:
    r = router(file_rule("/{+path}", "https://any/{+path}"),
               file_rule("/download/{file}", "https://dl/{file}"))
    decision = r.route(view("/download/x.tgz"))
    assert isinstance(decision, Redirect) and decision.location == "https://dl/x.tgz"
    decision = r.route(view("/other/x.tgz"))
    assert isinstance(decision, Redirect) and decision.location == "https://any/other/x.tgz"


def test_kind_order_puts_docker_before_files_and_catch_all_last() -> None:
    r = router(
        {"type": "catch-all-v1", "domain": "d.test", "package-id": "c",
         "redirect-target-domain": "home.test"},
        file_rule("/{+path}", "https://files/{+path}"),
        {"type": "docker-v1", "domain": "d.test", "repository-name": "a/b",
         "registry": "reg.test", "package-id": "p"},
    )
    docker = r.route(view("/v2/a/b/manifests/1"))
    assert isinstance(docker, Redirect) and docker.location == "https://reg.test/v2/a/b/manifests/1"
    assert [rule.rule_type for rule in r.table["d.test"]] == [
        "docker-v1", "file-v1", "catch-all-v1"]


def test_domains_are_case_insensitive_and_routed_separately() -> None:
    r = router(file_rule("/x", "https://one/", domain="One.Test"),
               file_rule("/x", "https://two/", domain="two.test"))
    assert r.domains == frozenset({"one.test", "two.test"})
    one = r.route(view("/x", host="one.test"))
    assert isinstance(one, Redirect) and one.location == "https://one/"
    assert r.route(view("/x", host="three.test")).status == 404  # type: ignore[union-attr]


def test_fallback_is_registry_json_for_v2_paths_only() -> None:
    r = router()
    v2 = r.route(view("/v2/unknown/manifests/1"))
    assert isinstance(v2, Respond) and v2.body == REGISTRY_NOT_FOUND
    assert ("Content-Type", "application/json") in v2.headers
    encoded = r.route(view("/%762/x"))
    assert isinstance(encoded, Respond) and encoded.body == REGISTRY_NOT_FOUND
    catalog = r.route(view("/v2/_catalog"))
    assert isinstance(catalog, Respond) and (catalog.status, catalog.body) == (404, b"")
    plain = r.route(view("/nothing"))
    assert isinstance(plain, Respond) and (plain.status, plain.body, plain.captures) == (
        404, b"", ())


def test_python_rules_of_a_domain_merge_into_one_index_even_when_interleaved() -> None:
    python = {"type": "python-v1", "domain": "d.test", "version": "1", "package-id": "p"}
    r = router(
        {**python, "package-name": "a", "file-name": "a-1.tar.gz", "backend-url": "https://a"},
        file_rule("/x", "https://x/"),
        {**python, "package-name": "b", "file-name": "b-1.tar.gz", "backend-url": "https://b"},
    )
    assert [rule.rule_type for rule in r.table["d.test"]] == ["file-v1", "python-v1"]
    page = r.route(RequestView("GET", "d.test", "/simple/", None, Headers()))
    assert isinstance(page, Respond) and b"/simple/a/" in page.body and b"/simple/b/" in page.body


def test_segments_and_routing_host() -> None:
    assert decode_segments("/") == ()
    assert decode_segments("/simple/") == ("simple", "")
    assert decode_segments("//x") == ("", "x")
    assert decode_segments("/a+b/%2F/%zz/%ff") == ("a+b", "/", "%zz", "\ufffd")
    assert routing_host("Cr.Example.TEST:8080") == "cr.example.test"
    assert routing_host("[::1]:8081") == "[::1]"
