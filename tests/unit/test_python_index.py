"""python-v1 simple index: golden pages, merging, normalisation, negotiation, caching."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from scarfgw.rules.decision import Decision, Redirect, Respond
from scarfgw.rules.fields import Fields, RuleError
from scarfgw.rules.python import JSON_TYPE, normalise, parse_python_v1
from scarfgw.rules.request import Headers, RequestView
from scarfgw.rules.router import Router
from tests.compat import CASE_NAMES, load_case

DOMAIN = "cool-stuff.io"
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


def compat_case(name: str) -> dict[str, Any]:
    """A compat case (skips when the cases are absent)."""
    if name not in CASE_NAMES:
        pytest.skip(f"compat case {name} not available")
    return load_case(name)


def make_router(rules: Sequence[Mapping[str, Any]]) -> Router:
    return Router([parse_python_v1(Fields(rule, f"rules[{i}]")) for i, rule in enumerate(rules)])


def rule(
    package: str = "numpy", file: str = "numpy-1.3.0.tar.gz", /, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "python-v1",
        "domain": DOMAIN,
        "package-name": package,
        "file-name": file,
        "version": file.removeprefix(f"{package}-"),
        "backend-url": f"https://files.example.org/{file}",
        "package-id": f"id-{package}",
    }
    data.update(extra)
    return data


def request(
    method: str,
    path: str,
    query: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    host: str = DOMAIN,
) -> RequestView:
    return RequestView(method, host, path, query, Headers(headers))


def route(router: Router, method: str, path: str, **kwargs: Any) -> Decision:
    return router.route(request(method, path, **kwargs))


def respond(decision: Decision) -> Respond:
    assert isinstance(decision, Respond)
    return decision


def redirect(decision: Decision) -> Redirect:
    assert isinstance(decision, Redirect)
    return decision


def header(decision: Respond, name: str) -> str | None:
    values = [value for key, value in decision.headers if key.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


def python_capture(
    package: str | None = None,
    version: str | None = None,
    file: str | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    return {"kind": "python", "package": package, "version": version, "file": file,
            "target": target}


# --- golden cases ---------------------------------------------------------------------


def test_root_etag_example_of_the_spec() -> None:
    page = respond(route(make_router([rule()]), "GET", "/simple/"))
    assert header(page, "Etag") == '"V5vrPPiIHdnkkoBivA0iBAHsMgm_e-IFA0AhY9HoOEw="'
    assert page.body == (
        b'<!DOCTYPE html><html><body>\n<a href="/simple/numpy/">numpy</a><br>\n</body></html>'
    )


def test_page_headers_in_order() -> None:
    page = respond(route(make_router([rule()]), "GET", "/simple/numpy/"))
    assert [name for name, _ in page.headers] == ["Etag", "Content-Length", "Content-Type", "Vary"]
    assert header(page, "Content-Length") == str(len(page.body))
    assert header(page, "Vary") == "Accept"
    assert page.kind == "python"


def test_package_etag_covers_backend_urls() -> None:
    first = respond(route(make_router([rule()]), "GET", "/simple/numpy/"))
    moved = make_router([rule(**{"backend-url": "https://elsewhere.example.org/x.tar.gz"})])
    second = respond(route(moved, "GET", "/simple/numpy/"))
    assert first.body == second.body
    assert header(first, "Etag") != header(second, "Etag")


# --- merging --------------------------------------------------------------------------


class OtherRule:
    """A rule of another kind that never matches (separates python rules in the list)."""

    rule_type = "file-v1"
    domain = DOMAIN
    sort_descending = True

    def sort_key(self) -> int:
        return 0

    def merge(self, following: Any) -> None:
        return None

    def match(self, request: RequestView) -> None:
        return None


def test_merge_lists_most_recently_declared_first() -> None:
    router = make_router([rule("numpy"), rule("cipy", "cipy-1.0.tar.gz"),
                          rule("numpy", "numpy-1.4.0.tar.gz")])
    root = respond(route(router, "GET", "/simple/")).body.decode()
    assert root.index("/simple/numpy/") < root.index("/simple/cipy/")
    numpy = respond(route(router, "GET", "/simple/numpy/")).body.decode()
    assert numpy.index("numpy-1.4.0.tar.gz") < numpy.index("numpy-1.3.0.tar.gz")


def test_merge_collision_later_declaration_wins() -> None:
    router = make_router([
        rule(**{"backend-url": "https://old.example.org/a", "package-id": "old"}),
        rule(**{"backend-url": "https://new.example.org/a", "package-id": "new"}),
    ])
    download = redirect(route(router, "GET", "/simple/numpy/numpy-1.3.0.tar.gz"))
    assert download.location == "https://new.example.org/a"
    assert download.captures[0]["package"] == "new"
    page = respond(route(router, "GET", "/simple/numpy/"))
    assert page.body.count(b"numpy-1.3.0.tar.gz</a>") == 1


def test_merge_across_other_rule_kinds() -> None:
    rules = [parse_python_v1(Fields(rule("numpy"), "rules[0]")), OtherRule(),
             parse_python_v1(Fields(rule("cipy", "cipy-1.0.tar.gz"), "rules[2]"))]
    router = Router(rules)
    assert [r.rule_type for r in router.table[DOMAIN]] == ["file-v1", "python-v1"]
    root = respond(route(router, "GET", "/simple/")).body.decode()
    assert root.index("/simple/cipy/") < root.index("/simple/numpy/")


def test_merge_unites_projects_by_normalised_name() -> None:
    router = make_router([rule("Foo_Bar", "foo_bar-1.0.tar.gz"),
                          rule("foo.bar", "foo_bar-2.0.tar.gz")])
    root = respond(route(router, "GET", "/simple/")).body.decode()
    assert root.count("<a ") == 1
    assert '<a href="/simple/foo-bar/">foo.bar</a>' in root
    page = respond(route(router, "GET", "/simple/foo-bar/")).body.decode()
    assert "<h1>foo.bar</h1>" in page
    assert "foo_bar-1.0.tar.gz</a>" in page and "foo_bar-2.0.tar.gz</a>" in page


def test_merge_declines_other_kinds() -> None:
    single = parse_python_v1(Fields(rule(), "rules[0]"))
    assert single.merge(OtherRule()) is None


# --- normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "location"),
    [
        ("/simple/NumPy/", None, "/simple/numpy/"),
        ("/simple/numpy", None, "/simple/numpy/"),
        ("/simple/Num_Py", "x=1", "/simple/num-py/?x=1"),
        ("/simple", None, "/simple/"),
    ],
)
def test_non_canonical_urls_redirect_permanently(
    path: str, query: str | None, location: str
) -> None:
    router = make_router([rule(), rule("num.py", "num.py-1.0.tar.gz")])
    moved = redirect(route(router, "HEAD", path, query=query))
    assert (moved.status, moved.location, moved.kind, moved.captures) == (
        301, location, "python", ())


def test_canonical_links_do_not_redirect_again() -> None:
    router = make_router([rule("Django_Rest", "django_rest-1.0.tar.gz")])
    root = respond(route(router, "GET", "/simple/")).body.decode()
    assert '<a href="/simple/django-rest/">Django_Rest</a>' in root
    page = respond(route(router, "GET", "/simple/django-rest/"))
    assert page.status == 200
    assert b'href="/simple/django-rest/django_rest-1.0.tar.gz"' in page.body


def test_file_url_accepts_any_spelling_of_the_project() -> None:
    router = make_router([rule("Django_Rest", "django_rest-1.0.tar.gz")])
    download = redirect(route(router, "GET", "/simple/Django_Rest/django_rest-1.0.tar.gz"))
    assert download.status == 307


def test_unknown_project_and_deep_paths_fall_through() -> None:
    router = make_router([rule()])
    for path in ("/simple/scipy/", "/simple/scipy", "/simple/numpy/numpy-1.3.0.tar.gz/x",
                 "/other/"):
        assert route(router, "GET", path).kind == "none", path


def test_normalise() -> None:
    assert normalise("Foo.Bar__baz--Qux") == "foo-bar-baz-qux"


# --- escaping -------------------------------------------------------------------------


def test_text_and_attributes_are_escaped() -> None:
    router = make_router([rule("a&b", 'a&b "1" <x>.tar.gz', **{
        "requires-python": "<3,>=2.7",
        "hash-value": {"type": "sha256", "hash": "ab'cd"},
    })])
    root = respond(route(router, "GET", "/simple/")).body.decode()
    assert '<a href="/simple/a&amp;b/">a&amp;b</a>' in root
    page = respond(route(router, "GET", "/simple/a&b/")).body.decode()
    assert "<h1>a&amp;b</h1>" in page
    assert ('href="/simple/a&amp;b/a&amp;b%20%221%22%20%3Cx%3E.tar.gz#sha256=ab&#x27;cd"'
            in page)
    assert 'data-requires-python="&lt;3,&gt;=2.7"' in page
    assert ">a&amp;b &quot;1&quot; &lt;x&gt;.tar.gz</a>" in page
    download = redirect(route(router, "GET", "/simple/a&b/a&b%20%221%22%20%3Cx%3E.tar.gz"))
    assert download.location == 'https://files.example.org/a&b "1" <x>.tar.gz'


def test_gpg_sig_attribute() -> None:
    router = make_router([rule(**{"gpg-sig": False}), rule("x", "x-1.whl", **{"gpg-sig": True})])
    assert b'data-gpg-sig="false"' in respond(route(router, "GET", "/simple/numpy/")).body
    assert b'data-gpg-sig="true"' in respond(route(router, "GET", "/simple/x/")).body


# --- PEP 691 negotiation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/html"),
        ("*/*", "text/html"),
        ("", "text/html"),
        ("text/html", "text/html"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html"),
        (PIP_ACCEPT, JSON_TYPE),
        (UV_ACCEPT, JSON_TYPE),
        ("application/vnd.pypi.simple.latest+json", JSON_TYPE),
        ("application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.4", JSON_TYPE),
        ("application/vnd.pypi.simple.v1+json;q=0.4, text/html;q=0.5", "text/html"),
        ("application/vnd.pypi.simple.v1+json;q=0, */*", "text/html"),
        ("application/*", "text/html"),
        ("text/*;q=0.1, application/vnd.pypi.simple.v1+json;q=0.2", JSON_TYPE),
    ],
)
def test_negotiation(accept: str | None, content_type: str) -> None:
    headers = [] if accept is None else [("Accept", accept)]
    router = make_router([rule()])
    for path in ("/simple/", "/simple/numpy/"):
        page = respond(route(router, "GET", path, headers=headers))
        assert page.status == 200
        assert header(page, "Content-Type") == content_type
        assert header(page, "Vary") == "Accept"


@pytest.mark.parametrize("accept", ["application/json", "text/html;q=0", "image/png, text/plain"])
def test_nothing_acceptable_is_406(accept: str) -> None:
    page = respond(route(make_router([rule()]), "GET", "/simple/", headers=[("Accept", accept)]))
    assert (page.status, page.headers, page.body, page.captures) == (
        406, (("Vary", "Accept"),), b"", ())


def test_json_pages() -> None:
    router = make_router([
        rule("Foo_Bar", "foo_bar-1.0.tar.gz", **{
            "hash-value": {"type": "sha256", "hash": "abc"},
            "requires-python": ">=3.8",
            "gpg-sig": True,
        }),
        rule("Foo_Bar", "foo_bar-2.0.tar.gz"),
    ])
    accept = [("Accept", PIP_ACCEPT)]
    root = respond(route(router, "GET", "/simple/", headers=accept))
    assert json.loads(root.body) == {"meta": {"api-version": "1.0"},
                                     "projects": [{"name": "Foo_Bar"}]}
    project = respond(route(router, "GET", "/simple/foo-bar/", headers=accept))
    assert json.loads(project.body) == {
        "meta": {"api-version": "1.0"},
        "name": "foo-bar",
        "files": [
            {"filename": "foo_bar-2.0.tar.gz", "url": "/simple/foo-bar/foo_bar-2.0.tar.gz",
             "hashes": {}},
            {"filename": "foo_bar-1.0.tar.gz", "url": "/simple/foo-bar/foo_bar-1.0.tar.gz",
             "hashes": {"sha256": "abc"}, "requires-python": ">=3.8", "gpg-sig": True},
        ],
    }
    assert project.captures == (python_capture("id-Foo_Bar"),)
    html_page = respond(route(router, "GET", "/simple/foo-bar/"))
    assert header(project, "Etag") != header(html_page, "Etag")
    assert header(project, "Content-Length") == str(len(project.body))


# --- conditional requests and HEAD ----------------------------------------------------


def etag_of(router: Router, path: str, headers: Sequence[tuple[str, str]] = ()) -> str:
    value = header(respond(route(router, "GET", path, headers=headers)), "Etag")
    assert value is not None
    return value


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"other", {etag}', "*", "{bare}", 'W/"nope", W/{etag}'],
)
def test_if_none_match_gives_304(if_none_match: str) -> None:
    router = make_router([rule()])
    etag = etag_of(router, "/simple/numpy/")
    value = if_none_match.format(etag=etag, bare=etag.strip('"'))
    for method in ("GET", "HEAD"):
        page = respond(route(router, method, "/simple/numpy/",
                             headers=[("If-None-Match", value)]))
        assert (page.status, page.headers, page.body) == (
            304, (("etag", etag), ("Vary", "Accept")), b"")
        assert page.captures == (python_capture("id-numpy"),)


def test_if_none_match_other_tags_give_200() -> None:
    router = make_router([rule()])
    page = respond(route(router, "GET", "/simple/numpy/",
                         headers=[("If-None-Match", '"x", W/"y"')]))
    assert page.status == 200


def test_if_none_match_compares_against_the_negotiated_representation() -> None:
    router = make_router([rule()])
    html_etag = etag_of(router, "/simple/")
    json_etag = etag_of(router, "/simple/", [("Accept", UV_ACCEPT)])
    as_json = respond(route(router, "GET", "/simple/",
                            headers=[("Accept", UV_ACCEPT), ("If-None-Match", html_etag)]))
    assert as_json.status == 200
    cached = respond(route(router, "GET", "/simple/",
                           headers=[("Accept", UV_ACCEPT), ("If-None-Match", json_etag)]))
    assert cached.status == 304
    assert header(cached, "etag") == json_etag


def test_head_page_has_full_length_and_empty_body() -> None:
    router = make_router([rule()])
    for path in ("/simple/", "/simple/numpy/"):
        get = respond(route(router, "GET", path))
        head = respond(route(router, "HEAD", path))
        assert head.headers == get.headers
        assert head.body == b""
        assert head.captures == get.captures


def test_head_on_file_answers_like_get() -> None:
    router = make_router([rule()])
    get = redirect(route(router, "GET", "/simple/numpy/numpy-1.3.0.tar.gz"))
    head = redirect(route(router, "HEAD", "/simple/numpy/numpy-1.3.0.tar.gz"))
    assert head == get
    assert get.captures == (python_capture("id-numpy", "1.3.0.tar.gz", "numpy-1.3.0.tar.gz",
                                           "https://files.example.org/numpy-1.3.0.tar.gz"),)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_decline(method: str) -> None:
    index = parse_python_v1(Fields(rule(), "rules[0]"))
    for path in ("/simple/", "/simple/numpy/", "/simple/numpy/numpy-1.3.0.tar.gz", "/simple"):
        assert index.match(request(method, path)) is None


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"package-name": None}, "rules[0].package-name"),
        ({"backend-url": 3}, "rules[0].backend-url"),
        ({"hash-value": {"type": "md5"}}, "rules[0].hash-value.hash"),
        ({"hash-value": "md5=x"}, "rules[0].hash-value"),
        ({"gpg-sig": "yes"}, "rules[0].gpg-sig"),
        ({"requires-python": 3}, "rules[0].requires-python"),
        ({"backend-simple-index-url": 1}, "rules[0].backend-simple-index-url"),
    ],
)
def test_invalid_rules_name_the_key(changes: dict[str, Any], path: str) -> None:
    data = {key: value for key, value in {**rule(), **changes}.items() if value is not None}
    with pytest.raises(RuleError) as error:
        parse_python_v1(Fields(data, "rules[0]"))
    assert error.value.path == path


def test_optional_keys_are_marked_used() -> None:
    fields = Fields(rule(**{"owner": "me", "backend-simple-index-url": "https://x/simple/",
                            "hash-value": None, "gpg-sig": None, "requires-python": None}),
                    "rules[0]")
    parse_python_v1(fields)
    assert fields.unused() == []


# --- the 2065-file manifest -----------------------------------------------------------


def test_large_manifest_builds_once_and_renders_once() -> None:
    """Repeated requests get the very page objects of the first: the 2,065 declarations are
    merged into one index and each page is rendered once (also when compiled, where the
    module's names cannot be patched to count)."""
    rules = compat_case("unit-manifest-2-simple-root")["config"]["rules"]
    assert len(rules) == 2065
    router = make_router(rules)
    host = "fabioluz.gateway.scarf53.sh"
    rounds = []
    for _ in range(3):
        page = respond(route(router, "GET", "/simple/numpy/", host=host))
        root = respond(route(router, "HEAD", "/simple/", host=host))
        download = redirect(route(router, "GET", "/simple/numpy/numpy-1.22.1.zip", host=host))
        root_body = respond(route(router, "GET", "/simple/", host=host)).body
        rounds.append((page.body, root_body))
    assert all(later[0] is rounds[0][0] and later[1] is rounds[0][1] for later in rounds)
    assert header(root, "Etag") and root.body == b""
    assert (page.status, root.status, download.status) == (200, 200, 307)
    assert header(page, "Content-Type") == "text/html"
    assert header(page, "Content-Length") == "500809" == str(len(page.body))
    assert header(page, "Etag")
    assert page.body.count(b"</a><br>\n") == 2065
