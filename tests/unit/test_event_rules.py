"""telemetry-v1, pixel and scarf-js rules (spec 4.6-4.8), without sockets.

Their compat cases are replayed in ``test_docker.py`` (one harness for both modules).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from scarfgw.rules.base import Rule
from scarfgw.rules.decision import Respond
from scarfgw.rules.events import (
    PixelRule,
    parse_pixel,
    parse_scarf_js,
    parse_telemetry,
    pixel_id,
)
from scarfgw.rules.fields import Fields, RuleError
from scarfgw.rules.request import Headers, RequestView
from scarfgw.rules.router import Router

DOMAIN = "events.example.com"


def request(
    path: str,
    method: str = "POST",
    body: bytes = b"",
    query: str | None = None,
    authorization: str | None = None,
) -> RequestView:
    headers = Headers([] if authorization is None else [("Authorization", authorization)])
    return RequestView(method, DOMAIN, path, query, headers, body)


def respond(rule: Rule, view: RequestView) -> Respond:
    decision = rule.match(view)
    assert isinstance(decision, Respond)
    return decision


# --- telemetry ---------------------------------------------------------------------------


def telemetry(tokens: list[str] | None = None, /, **extra: Any) -> Rule:
    data: dict[str, Any] = {
        "type": "telemetry-v1",
        "domain": DOMAIN,
        "incoming-path": "/events",
        "package-id": "123",
        **extra,
    }
    if tokens is not None:
        data["access-tokens"] = tokens
    return parse_telemetry(Fields(data, "rules[0]"))


def test_telemetry_records_one_event_per_object_before_responding() -> None:
    decision = respond(telemetry(), request("/events", body=b'{"x": 1} 2 {"y": [1]}{}'))
    assert (decision.status, decision.headers, decision.body) == (200, (), b"")
    assert decision.kind == "telemetry"
    assert decision.captures_before
    assert decision.captures == (
        {"kind": "telemetry", "package": "123", "event": {"x": 1}},
        {"kind": "telemetry", "package": "123", "event": {"y": [1]}},
        {"kind": "telemetry", "package": "123", "event": {}},
    )


def test_telemetry_without_objects_records_nothing() -> None:
    assert respond(telemetry(), request("/events", body=b"not json")).captures == ()


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/events/", "POST"),
        ("/event", "POST"),
        ("/events", "GET"),
        ("/events", "PUT"),
        ("/other/events", "POST"),
    ],
)
def test_telemetry_declines(path: str, method: str) -> None:
    assert telemetry().match(request(path, method=method)) is None


def test_telemetry_path_query_is_ignored_and_segments_decoded() -> None:
    rule = telemetry(**{"incoming-path": "/my%20events?x=1"})
    assert rule.match(request("/my%20events")) is not None
    assert rule.match(request("/my events")) is not None


@pytest.mark.parametrize(
    ("tokens", "authorization", "status"),
    [
        (None, None, 200),
        (None, "Bearer whatever", 200),
        ([], None, 401),
        ([], "Bearer ", 401),
        ([], "Bearer x", 401),
        (["abc", "def"], "Bearer def", 200),
        (["abc"], "Bearer   abc  ", 200),
        (["abc"], "Bearer abc\t", 200),
        (["abc"], "bearer abc", 401),
        (["abc"], "BEARER abc", 401),
        (["abc"], "Bearerabc", 401),
        (["abc"], "Basic abc", 401),
        (["abc"], "Bearer abcd", 401),
        (["abc"], "Bearer ab", 401),
        (["abc"], None, 401),
        (["äbc"], "Bearer äbc", 200),
    ],
)
def test_telemetry_tokens(tokens: list[str] | None, authorization: str | None, status: int) -> None:
    decision = respond(
        telemetry(tokens), request("/events", body=b"{}", authorization=authorization)
    )
    assert decision.status == status
    if status == 401:
        assert (decision.headers, decision.body, decision.captures) == ((), b"", ())


def test_telemetry_limits_default_and_configurable() -> None:
    many = b"{}" * 20
    assert len(respond(telemetry(), request("/events", body=many)).captures) == 10
    padded = b" " * 250 + b'{"a": 1}'
    assert respond(telemetry(), request("/events", body=padded)).captures == ()
    rule = telemetry(**{"max-body-bytes": 1000, "max-events": 15})
    assert len(respond(rule, request("/events", body=many)).captures) == 15
    assert len(respond(rule, request("/events", body=padded)).captures) == 1


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"access-tokens": "abc"}, "access-tokens"),
        ({"access-tokens": [1]}, "access-tokens"),
        ({"max-events": 0}, "max-events"),
        ({"max-body-bytes": "big"}, "max-body-bytes"),
        ({"incoming-path": None}, "incoming-path"),
    ],
)
def test_telemetry_invalid_keys(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(RuleError) as info:
        telemetry(**extra)
    assert info.value.path == f"rules[0].{key}"


# --- pixel -------------------------------------------------------------------------------


def pixel(image: bytes = b"<png>", content_type: str = "image/png") -> Rule:
    data = {
        "type": "pixel-v1",
        "domain": DOMAIN,
        "content-type": content_type,
        "image-base64": base64.b64encode(image).decode(),
    }
    return parse_pixel(Fields(data, "rules[0]"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("x-pxid=12345", "12345"),
        ("a=1&x-pxid=a%20b+c&x-pxid=second", "a b c"),
        ("x-pxid", ""),
        ("x-pxid=", ""),
        ("", ""),
        (None, ""),
        ("X-PXID=1", ""),
        ("x-pxid=%C3%A4", "ä"),
    ],
)
def test_pixel_id(query: str | None, expected: str) -> None:
    view = request("/a.png", method="GET", query=query)
    assert pixel_id(view) == expected
    assert respond(pixel(), view).captures == (
        {"kind": "pixel", "package": None, "pixel_id": expected},
    )


def test_pixel_response() -> None:
    decision = respond(pixel(b"\x89PNG", "image/x"), request("/a.png/anything", method="GET"))
    assert decision.status == 200
    assert decision.kind == "pixel"
    assert decision.headers == (
        ("Cache-control", "no-cache, no-store, must-revalidate"),
        ("Content-Length", "4"),
        ("Content-Type", "image/x"),
    )
    assert decision.body == b"\x89PNG"


@pytest.mark.parametrize(
    ("path", "method"),
    [("/a.png", "HEAD"), ("/a.png", "POST"), ("/b.png", "GET"), ("/", "GET"), ("/x/a.png", "GET")],
)
def test_pixel_declines(path: str, method: str) -> None:
    assert pixel().match(request(path, method=method)) is None


@pytest.mark.parametrize("encoded", ["not base64!", "YQ", "ä"])
def test_pixel_rejects_invalid_base64(encoded: str) -> None:
    data = {"domain": DOMAIN, "content-type": "image/png", "image-base64": encoded}
    with pytest.raises(RuleError) as info:
        parse_pixel(Fields(data, "rules[2]"))
    assert info.value.path == "rules[2].image-base64"


def test_identical_pixels_collapse() -> None:
    assert len(Router([pixel(), pixel()]).table[DOMAIN]) == 1
    assert len(Router([pixel(), pixel(b"other")]).table[DOMAIN]) == 2
    assert isinstance(pixel(), PixelRule)


# --- scarf-js ----------------------------------------------------------------------------


def scarf_js() -> Rule:
    return parse_scarf_js(Fields({"type": "scarf-js-v1", "domain": DOMAIN}, "rules[0]"))


@pytest.mark.parametrize(
    ("method", "body", "status"),
    [
        ("POST", b'{"a": 1}', 200),
        ("POST", b" [1, 2] \n", 200),
        ("POST", b'"text"', 200),
        ("POST", b"", 422),
        ("POST", b"{", 422),
        ("POST", b'{"a": 1} x', 422),
        ("POST", b"{}{}", 422),
        ("POST", b"NaN", 422),
        ("GET", b"{bad", 422),
        ("PUT", b'{"a": 1}', 405),
        ("GET", b"null", 405),
    ],
)
def test_scarf_js_statuses(method: str, body: bytes, status: int) -> None:
    decision = respond(scarf_js(), request("/package-event/install", method=method, body=body))
    assert decision.status == status
    assert decision.body == b""
    if status == 200:
        assert decision.headers == (("Content-Type", "application/json"),)
        assert len(decision.captures) == 1
    else:
        assert (decision.headers, decision.captures) == ((), ())


@pytest.mark.parametrize(
    ("path", "package"),
    [
        ("/package-event/install", None),
        ("/package-event/install/", ""),
        ("/package-event/install/left-pad", "left-pad"),
        ("/package-event/install/%40scope%2Fpkg/extra", "@scope/pkg"),
    ],
)
def test_scarf_js_package(path: str, package: str | None) -> None:
    decision = respond(scarf_js(), request(path, body=b'{"k": "v"}'))
    assert decision.captures == ({"kind": "scarfjs", "package": package, "event": {"k": "v"}},)


@pytest.mark.parametrize("path", ["/package-event", "/package-event/installs", "/install"])
def test_scarf_js_declines(path: str) -> None:
    assert scarf_js().match(request(path, body=b"{}")) is None


def test_scarf_js_is_tried_first() -> None:
    router = Router([telemetry(**{"incoming-path": "/package-event/install"}), scarf_js()])
    decision = router.route(request("/package-event/install", body=b"{}"))
    assert isinstance(decision, Respond)
    assert decision.kind == "scarfjs"
