"""file-v1, file-v2 and catch-all-v1 rules, query forwarding, and their compat cases."""

from __future__ import annotations

from typing import Any

import pytest

from scarfgw.rules.decision import Decision, Redirect, Respond
from scarfgw.rules.fields import Fields, RuleError
from scarfgw.rules.files import (
    forward_query,
    parse_catch_all,
    parse_file_v1,
    parse_file_v2,
    translate_pcre,
)
from scarfgw.rules.manifest import parse_rules
from scarfgw.rules.query import parse_query
from scarfgw.rules.request import Headers, RequestView
from scarfgw.rules.router import Router

DOMAIN = "files.example.com"
PACKAGE = "pkg-1"


def request(
    path: str, query: str | None = None, body: bytes = b"", method: str = "GET"
) -> RequestView:
    return RequestView(method, DOMAIN, path, query, Headers(), body)


def file_v1(incoming: str, outgoing: str | None = None, **extra: Any) -> dict[str, Any]:
    rule = {"type": "file-v1", "domain": DOMAIN, "package-id": PACKAGE}
    return {**rule, "incoming-path": incoming, "outgoing-url": outgoing, **extra}


def file_v2(incoming: str, outgoing: str | None = None) -> dict[str, Any]:
    rule = {"type": "file-v2", "domain": DOMAIN, "package-id": PACKAGE}
    return {**rule, "incoming-path": incoming, "outgoing-url": outgoing}


def catch_all(target: str | None = None, package: str = PACKAGE) -> dict[str, Any]:
    rule = {"type": "catch-all-v1", "domain": DOMAIN, "package-id": package}
    return rule if target is None else {**rule, "redirect-target-domain": target}


def route(rules: list[dict[str, Any]], view: RequestView) -> Decision:
    return Router(parse_rules(rules, "rules")).route(view)


def status(decision: Decision) -> int:
    assert isinstance(decision, (Redirect, Respond))
    return decision.status


def location(decision: Decision) -> str:
    assert isinstance(decision, Redirect)
    assert decision.status == 307
    return decision.location


# --- section 6: forward_query --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "query", "expected"),
    [
        ("https://dl/x?a=1&mode=x%2Fy", "a=2&b=3&b=4&c", "https://dl/x?a=1&mode=x%2Fy&b=3&c"),
        (
            "https://datausa.io/api/data",
            "drilldowns=Nation&measures=Population",
            "https://datausa.io/api/data?drilldowns=Nation&measures=Population",
        ),
        ("https://dl/x?keep=as%7eis", None, "https://dl/x?keep=as%7eis"),  # no query
        ("https://dl/x?keep=as%7eis", "", "https://dl/x?keep=as%7eis"),  # bare '?'
        ("https://dl/a b", "x=1", "https://dl/a b"),  # not a URI: request query dropped
        ('https://dl/"x"', "x=1", 'https://dl/"x"'),
        ("https://dl/x#frag", "q=a+b&flag", "https://dl/x?q=a%20b&flag#frag"),
        ("https://user:secret@dl/x", "a=1", "https://user:secret@dl/x?a=1"),  # O11 stance
        ("https://dl/x?t", "t=1&u=", "https://dl/x?t&u="),
    ],
)
def test_forward_query(target: str, query: str | None, expected: str):
    assert forward_query(target, parse_query(query or "")) == expected


# --- file-v1 -------------------------------------------------------------------------------


def test_file_v1_redirect_with_variables_and_forwarded_query():
    rules = [file_v1("/dl/{name}", "https://cdn.example/{name}")]
    decision = route(rules, request("/dl/tool%20x", "v=1"))
    assert location(decision) == "https://cdn.example/tool%20x?v=1"
    assert decision.kind == "file"
    assert decision.captures == (
        {
            "kind": "file",
            "package": PACKAGE,
            "variables": {"name": "tool x"},
            "target": "https://cdn.example/tool%20x?v=1",
        },
    )


def test_file_v1_empty_variable_matches():
    decision = route([file_v1("/dl/{name}", "https://cdn.example/{name}")], request("/dl/"))
    assert location(decision) == "https://cdn.example/"


def test_file_v1_without_outgoing_answers_200():
    without_key = {k: v for k, v in file_v1("/dl/{name}").items() if k != "outgoing-url"}
    for rule in (file_v1("/dl/{name}"), without_key):
        decision = route([rule], request("/dl/x"))
        assert isinstance(decision, Respond)
        assert (decision.status, decision.headers, decision.body) == (200, (), b"")
        assert decision.captures[0]["target"] is None
        assert decision.captures[0]["variables"] == {"name": "x"}


def test_file_v1_declines_when_first_candidate_lacks_an_outgoing_variable():
    rules = [file_v1("/x{?a,b}", "https://o/{a}")]
    assert status(route(rules, request("/x", "b=1"))) == 404


def test_file_v1_variables_matched_without_any_defined_declines():
    assert status(route([file_v1("/foo{?x,y}")], request("/foo"))) == 404


def test_file_v1_static_template_with_variable_outgoing_declines():
    assert status(route([file_v1("/data", "https://o/{x}")], request("/data"))) == 404


def test_file_v1_static_query_is_an_unordered_subset():
    rules = [file_v1("/data?a=1&b=2", "https://o/data")]
    decision = route(rules, request("/data", "b=2&a=1&c=3"))
    assert location(decision) == "https://o/data?b=2&a=1&c=3"
    assert status(route(rules, request("/data", "a=1"))) == 404


def test_file_v1_body_events():
    body = b'{"a": 1} [2] {"b": {"c": true}}'
    decision = route([file_v1("/collect")], request("/collect", body=body, method="POST"))
    assert [c["body_variables"] for c in decision.captures] == [{"a": 1}, {"b": {"c": True}}]
    assert all(c["variables"] == {} and c["target"] is None for c in decision.captures)


def test_file_v1_body_limits():
    many = b"{}" * 12
    assert len(route([file_v1("/c")], request("/c", body=many)).captures) == 10
    cut = b'{"x": "' + b"y" * 260 + b'"}'
    (capture,) = route([file_v1("/c")], request("/c", body=cut)).captures
    assert "body_variables" not in capture


def test_file_v1_sorting_by_template_key():
    rules = [
        file_v1("/{+path}", "https://catch/{+path}"),
        file_v1("/download/{file}", "https://dl/{file}"),
    ]
    assert location(route(rules, request("/download/a.tgz"))) == "https://dl/a.tgz"
    assert location(route(rules, request("/other/a.tgz"))) == "https://catch/other/a.tgz"


def test_file_v1_rule_protocol():
    rule = parse_file_v1(Fields(file_v1("/a/{b}"), "rules[0]"))
    assert (rule.rule_type, rule.domain, rule.sort_descending) == ("file-v1", DOMAIN, True)
    assert rule.sort_key() == ("a",)
    assert rule.merge(rule) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("incoming-path", "/a b"), ("outgoing-url", "https://o/{x"), ("incoming-path", None)],
)
def test_file_v1_invalid_fields(key: str, value: Any):
    rule = {**file_v1("/a", "https://o/a"), key: value}
    with pytest.raises(RuleError) as raised:
        parse_rules([rule], "rules")
    assert raised.value.path == f"rules[0].{key}"


def test_unused_keys_are_not_warned_about():
    warnings: list[str] = []
    rules = [
        file_v1("/a", None, **{"package-name": "n", "owner": "o", "colour": "red"}),
        {**file_v2("/b"), "package-name": "n", "owner": "o"},
        {**catch_all(), "package-name": "n", "owner": "o"},
    ]
    parse_rules(rules, "rules", warnings.append)
    assert warnings == ["rules[0].colour: unknown key ignored"]


# --- file-v2 -------------------------------------------------------------------------------


def test_file_v2_raw_capture_is_encoded_again():
    rules = [file_v2("^/f/(?<name>.*)$", "https://o/{name}")]
    assert location(route(rules, request("/f/a%20b", "x=1"))) == "https://o/a%2520b?x=1"


def test_file_v2_search_is_unanchored():
    decision = route([file_v2("(?<v>[0-9]+)")], request("/pkg/v12/x"))
    assert isinstance(decision, Respond) and decision.status == 200
    assert decision.captures == (
        {"kind": "file", "package": PACKAGE, "variables": {"v": "12"}, "target": None},
    )


@pytest.mark.parametrize(
    ("pattern", "path", "variables"),
    [
        ("(?<a>x)|(?<b>y)", "/y", {"a": "", "b": "y"}),  # unset below a set group: ""
        ("(?<a>x)|(?<b>y)", "/x", {"a": "x"}),  # unset above every set group: absent
        ("(?<a>x)?(y)", "/y", {"a": ""}),  # an unnamed higher group counts too
        ("(?P<a>x)(?'b'y)", "/xy", {"a": "x", "b": "y"}),  # other PCRE spellings
        ("(?<a>.)\\k<a>", "/zz", {"a": "z"}),
        ("a*", "/baa", {}),  # not-empty: the empty match at 0 is skipped
    ],
)
def test_file_v2_groups(pattern: str, path: str, variables: dict[str, str]):
    decision = route([file_v2(pattern)], request(path))
    assert isinstance(decision, Respond) and decision.status == 200
    assert decision.captures[0]["variables"] == variables


@pytest.mark.parametrize(("pattern", "path"), [("^", "/x"), ("x*$", "/ab"), ("^/a$", "/a/")])
def test_file_v2_no_match(pattern: str, path: str):
    assert status(route([file_v2(pattern)], request(path))) == 404


def test_file_v2_missing_outgoing_variable_declines():
    assert status(route([file_v2("/(?<a>x)", "https://o/{b}")], request("/x"))) == 404


def test_file_v2_trimmed_for_matching_untrimmed_for_sorting():
    rule = parse_file_v2(Fields(file_v2("  ^/x$ "), "rules[0]"))
    assert (rule.sort_key(), rule.sort_descending, rule.rule_type) == ("  ^/x$ ", False, "file-v2")
    assert isinstance(rule.match(request("/x")), Respond)


def test_file_v2_sorted_by_source_text():
    rules = [file_v2("/b", "https://second/"), file_v2("/", "https://first/")]
    assert location(route(rules, request("/b"))) == "https://first/"


def test_file_v2_ignores_the_body():
    (capture,) = route([file_v2("/c")], request("/c", body=b'{"a": 1}')).captures
    assert "body_variables" not in capture


def test_file_v2_invalid_regex():
    with pytest.raises(RuleError, match=r"rules\[0\]\.incoming-path: invalid regular expression"):
        parse_file_v2(Fields(file_v2("(?<a>"), "rules[0]"))


def test_translate_pcre_leaves_lookbehind_classes_and_escapes():
    assert translate_pcre(r"(?<=a)(?<!b)[(?<x>]\(?<y>") == r"(?<=a)(?<!b)[(?<x>]\(?<y>"


# --- catch-all-v1 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/", None, "https://D"),
        ("/a/", None, "https://D/a/"),
        ("/a+b:c", None, "https://D/a%2Bb%3Ac"),
        ("/a%2Fb", None, "https://D/a%2Fb"),
        ("/s", "q=a+b&flag", "https://D/s?q=a%20b&flag"),
        ("/s", "", "https://D/s"),
        ("/x@!$&'()*,;=", None, "https://D/x%40%21%24%26%27%28%29%2A%2C%3B%3D"),
        ("/%C3%A4", None, "https://D/%C3%A4"),
    ],
)
def test_catch_all_redirect(path: str, query: str | None, expected: str):
    decision = route([catch_all("D")], request(path, query, method="DELETE"))
    assert location(decision) == expected
    assert decision.kind == "catchall"
    assert decision.captures == (
        {"kind": "catchall", "package": PACKAGE, "variables": {}, "target": expected},
    )


def test_catch_all_without_target_answers_200():
    decision = route([catch_all()], request("/anything", body=b"{}"))
    assert isinstance(decision, Respond)
    assert (decision.status, decision.kind, decision.body) == (200, "catchall", b"")
    assert decision.captures == (
        {"kind": "catchall", "package": PACKAGE, "variables": {}, "target": None},
    )


def test_catch_all_comes_last_and_first_declared_wins():
    rules = [catch_all("first"), file_v1("/f", "https://file/"), catch_all("second")]
    assert location(route(rules, request("/f"))) == "https://file/"
    assert location(route(rules, request("/x"))) == "https://first/x"


def test_adjacent_catch_alls_collapse_into_the_following_one():
    first = parse_catch_all(Fields(catch_all(), "rules[0]"))
    second = parse_catch_all(Fields(catch_all(), "rules[1]"))
    assert (first.rule_type, first.sort_descending) == ("catch-all-v1", False)
    assert first.merge(second) is second
