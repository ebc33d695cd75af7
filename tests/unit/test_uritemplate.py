"""URI templates (spec section 5): syntax, expansion, reverse matching, derived properties."""

from __future__ import annotations

import pytest

from scarfgw.rules.query import parse_query
from scarfgw.rules.uritemplate import (
    UriParts,
    parse_absolute_uri,
    parse_relative_ref,
    parse_template,
)

# --- 5.5 reverse matching ------------------------------------------------------------------

VERIFIED = [
    ("/{package}-{os}-{arch}", "/minikube-linux-amd64-hallo",
     {"package": "minikube", "os": "linux", "arch": "amd64-hallo"}),
    ("/{package}-{version}.{ext}", "/minikube-1.0.tar.gz",
     {"package": "minikube", "version": "1", "ext": "0.tar.gz"}),
    ("/{a}-{b}", "/x-y-z", {"a": "x", "b": "y-z"}),
    ("/{a}{b}", "/xy", {"a": "x", "b": "y"}),
    ("/{+a}/{b}", "/x/y/z", {"a": "x/y", "b": "z"}),
    ("/{a}/{+b}", "/x/y/z", {"a": "x", "b": "y/z"}),
    ("/{a}-{b}", "/%41-x-y", {"a": "A", "b": "x-y"}),
    ("/{a}-{b}", "/x%41-x-y", {"a": "xA-x", "b": "y"}),
    ("/some-nice-path/{v}", "/some-nice-path/", {"v": ""}),
    ("/some-nice-path/{v}", "/some-nice-path", None),
    ("/{x}", "/a%20b", {"x": "a b"}),
    ("/{x}", "/a+b", None),
    ("/{+x}", "/a%25b", {"x": "a%b"}),
    ("/foo{?x,y}", "/foo?y=2", {"y": "2"}),
    ("/foo{?x,y}", "/foo", {}),
    ("/foo{?x,y}", "/foo?", None),
    ("/data?drilldowns={d}&measures={m}", "/data?measures=P&drilldowns=N", None),
    ("/{x}", "/ä", None),
]  # fmt: skip


@pytest.mark.parametrize(("template", "subject", "expected"), VERIFIED)
def test_verified_first_match(template: str, subject: str, expected: dict[str, str] | None):
    assert parse_template(template).match(subject) == expected


@pytest.mark.parametrize(
    ("template", "subject", "expected"),
    [
        ("/{x}", "/a%2Fb", {"x": "a/b"}),  # %2F is accepted inside {x} and decoded
        ("/{x}", "/a/b", None),  # {x} never spans segments
        ("/{x}", "/%C3%A4", {"x": "ä"}),
        ("/{x}", "/%C3", None),  # an escape run must be valid UTF-8
        ("/{x}", "/%c3%a4", {"x": "ä"}),  # escapes of any case are decoded
        ("/dl/{name}", "/dl/", {"name": ""}),  # variables may match the empty string
        ("/{x*}", "/abc", None),  # explode never matches a defined value
        ("/{x:3}", "/abcdef", {"x": "abcdef"}),  # a prefix does not limit the length
        ("/{a}/{a}", "/x/x", {"a": "x"}),
        ("/{a}/{a}", "/x/y", None),  # a repeated name needs equal values
        ("/{a:2}/{a}", "/xy/xyz", {"a": "xyz"}),
        ("/{a:2}/{a}", "/xz/xyz", None),
        ("/x{;a,b}", "/x;a=1;b", {"a": "1", "b": ""}),
        ("/x{;a}", "/x;a=", {"a": ""}),
        ("/x{#f}", "/x#a/b", {"f": "a/b"}),
        ("/x{.e}", "/x.tar", {"e": "tar"}),
        ("/x{/a,b}", "/x/1/2", {"a": "1", "b": "2"}),
        ("/x{&a}", "/x&a=1", {"a": "1"}),
        ("/x{?a}", "/x?a", None),  # ? and & need name=
        ("/ä{x}", "/%C3%A4y", {"x": "y"}),  # a non-ASCII literal matches its encoding
        ("/a%2fb", "/a%2fb", {}),  # a %XX literal appears exactly as written
        ("/a%2fb", "/a%2Fb", None),
        ("/{a}", "/x,", {"a": "x"}),  # Burrito: a separator may follow the last variable
        ("/{a}{b}", "/ab", {"a": "a", "b": "b"}),
    ],
)
def test_match_details(template: str, subject: str, expected: dict[str, str] | None):
    assert parse_template(template).match(subject) == expected


# --- 5.3 expansion -------------------------------------------------------------------------

VALUES = {
    "var": "value",
    "hello": "Hello World!",
    "path": "/foo/bar",
    "x": "1024",
    "y": "768",
    "empty": "",
    "pct": "a%41",
    "u": "äb",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{var}", "value"),
        ("{hello}", "Hello%20World%21"),
        ("{x,y}", "1024,768"),
        ("{var:3}", "val"),
        ("{u:1}", "%C3%A4"),  # truncation counts characters, before encoding
        ("{+hello}", "Hello%20World!"),
        ("{+path}/here", "/foo/bar/here"),
        ("{+pct}", "a%2541"),  # '%' is always encoded, even for +
        ("{#path,x}", "#/foo/bar,1024"),
        ("{#pct}", "#a%2541"),
        ("{.var}", ".value"),
        ("X{.x,y}", "X.1024.768"),
        ("{/var,x}/here", "/value/1024/here"),
        ("{/path}", "/%2Ffoo%2Fbar"),
        ("{;x,y,empty}", ";x=1024;y=768;empty"),
        ("{?x,y,empty}", "?x=1024&y=768&empty="),
        ("?fixed=yes{&x,empty}", "?fixed=yes&x=1024&empty="),
        ("{u}", "%C3%A4b"),
        ("/ä/{var}", "/%C3%A4/value"),  # non-ASCII literal text is encoded
        ("/a%2fb/{var}", "/a%2fb/value"),  # %XX literals are copied as written
        ("{var*}", "value"),  # explode has no effect on a string
    ],
)
def test_expansion(template: str, expected: str):
    assert parse_template(template).expand(VALUES) == expected


def test_expansion_fails_when_a_variable_is_missing():
    assert parse_template("https://x/{a}/{b}").expand({"a": "1"}) is None


# --- 5.2 syntax ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "/a b",
        "/it's",
        '/"q"',
        "/<x>",
        "/a\\b",
        "/a^b",
        "/a`b",
        "/a|b",
        "/x}",
        "/{x",
        "/{}",
        "/{=x}",
        "/{,x}",
        "/{!x}",
        "/{@x}",
        "/{|x}",
        "/{x,}",
        "/{x-y}",
        "/{a..b}",
        "/{.a.}",
        "/{x:0}",
        "/{x:01}",
        "/{x:10000}",
        "/{x*:3}",
        "/%zz",
        "/%4",
        "/{%4x}",
        "/a\x7fb",
        "/a\x85b",
    ],
)
def test_invalid_templates_are_rejected(template: str):
    with pytest.raises(ValueError, match="offset"):
        parse_template(template)


@pytest.mark.parametrize(
    "template",
    ["/{a.b}", "/{%41}", "/{x:9999}", "/{x*}", "/ä{x}", "/a%2Fb", "/{+a,b}", "/x{?a}{&b}", "/~!$"],
)
def test_valid_templates_are_accepted(template: str):
    assert parse_template(template).text == template


# --- 5.4, 3.3 and 4.2 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "captures"),
    [
        ("/data?drilldowns={drilldowns}", True),
        ("/{drilldowns}?measures={measures}", True),
        ("/x{?q}", True),
        ("/data?", False),
        ("/{+path}", False),
        ("/data?a=1", True),
        ("/data", False),
    ],
)
def test_captures_query(template: str, captures: bool):
    assert parse_template(template).captures_query is captures


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("/download/{file}", ("download",)),
        ("/{+path}", ()),
        ("/some-nice-path/very-nice/{+variable}", ("some-nice-path", "very-nice")),
        ("/data{?x}", ("data?x=",)),
        ("/a{;x}", ("a;x",)),
    ],
)
def test_sort_key(template: str, key: tuple[str, ...]):
    assert parse_template(template).sort_key == key


def test_sort_key_order():
    keys = [parse_template(t).sort_key for t in ("/{+path}", "/download/{file}", "/a/b/{c}")]
    assert sorted(keys, reverse=True) == [("download",), ("a", "b"), ()]


@pytest.mark.parametrize(
    ("template", "path", "query", "expected"),
    [
        ("/data", "/data", "anything=1", True),  # no query capture: the query is ignored
        ("/data", "/data/", None, False),
        ("/data?", "/data", "x=1", True),
        ("/data?a=1&b=2", "/data", "b=2&c=3&a=1", True),  # any order, extras allowed
        ("/data?a=1&b=2", "/data", "a=1", False),
        ("/data?a=1", "/data", "a=2", False),
        ("/data?flag", "/data", "flag", True),
        ("/data?flag", "/data", "flag=", False),  # value-less differs from empty
        ("/data?a=1&a=2", "/data", "a=2", True),  # the last occurrence counts
        ("/data?a=1", "/data", "a=1&a=2", False),
        ("/data?q=a+b", "/data", "q=a%20b", True),
        ("/d/{x}", "/d/{x}", None, False),  # templates with expressions never pass
        ("http://h/data", "http://h/data", None, False),  # not a relative reference
    ],
)
def test_static_check(template: str, path: str, query: str | None, expected: bool):
    parsed = parse_query(query or "")
    assert parse_template(template).static_check(path, parsed) is expected


# --- RFC 3986 splitting --------------------------------------------------------------------


def test_absolute_uri_parts():
    parts = parse_absolute_uri("https://u:pw@Host:8080/a/b?x=1&y#frag")
    assert parts == UriParts("https", "u:pw@Host:8080", "/a/b", "x=1&y", "frag")
    assert parts is not None and parts.render() == "https://u:pw@Host:8080/a/b?x=1&y#frag"
    assert parse_absolute_uri("mailto:me@example.com") == UriParts(
        "mailto", None, "me@example.com", None, None
    )
    assert parse_absolute_uri("https://[::1]:5000/") is not None


@pytest.mark.parametrize(
    "text", ["https://x/a b", 'https://x/"', "/relative", "https://[zz]/", "1http://x/", "h://x/%g"]
)
def test_not_absolute_uris(text: str):
    assert parse_absolute_uri(text) is None


def test_relative_refs():
    assert parse_relative_ref("/data?a=1") == UriParts(None, None, "/data", "a=1", None)
    assert parse_relative_ref("//h/p") == UriParts(None, "h", "/p", None, None)
    assert parse_relative_ref("a:b") is None  # would be a scheme
    assert parse_relative_ref("") == UriParts(None, None, "", None, None)


def test_regex_fast_path_finds_the_same_first_match_as_the_backtracking_matcher():
    """Templates of literals and one-variable {x}/{+x} expressions are matched by a regex
    when the subject has no escapes; it must agree with 5.5 on every input."""
    import random

    from scarfgw.rules.uritemplate import _match_parts

    rng = random.Random(20261122)
    literals = ["/", "-", ".", "_", "a", "x", ",", ":", "?", "=", "&", "/dl/", ".tar.gz", "~"]
    expressions = ["{a}", "{b}", "{c}", "{+p}", "{+q}"]
    alphabet = "ab-._/,:?=&x~@+1"
    compared = 0
    while compared < 5000:
        pieces: list[str] = []
        for _ in range(rng.randint(1, 5)):
            choice = rng.choice(literals if rng.random() < 0.5 else expressions)
            if choice not in pieces or choice in literals:
                pieces.append(choice)
        template = parse_template("".join(pieces))
        assert template._fast is not None
        subject = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        state = next(_match_parts(template.parts, 0, subject, 0, {}), None)
        slow = None if state is None else {
            name: bound[0] for name, bound in state.items() if bound is not None}
        assert template.match(subject) == slow, (template.text, subject)
        compared += 1


def test_fast_path_stays_off_where_it_does_not_reach():
    for text in ("/{a,b}", "/x{?q}", "/{a}/{a}", "/{a*}", "/{a:3}", "/{#f}", "/{.ext}"):
        assert parse_template(text)._fast is None
    assert parse_template("/{x}")._fast is not None
    assert parse_template("/{x}").match("/a%20b") == {"x": "a b"}, "escapes use the full matcher"


def test_values_alternating_plain_and_escaped_text_are_bounded():
    template = parse_template("/files/{name}")
    assert template.match("/files/" + "a%41" * 20) == {"name": "aA" * 20}
    many = "/files/" + "a%41" * 4000  # a 16 KiB target; was RecursionError, or (compiled)
    assert template.match(many) is None  # thousands of nested generators on the C stack
