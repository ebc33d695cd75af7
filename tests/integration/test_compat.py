"""Every case of shared/compat against a real gateway listening on loopback."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.support import (
    COMPAT_DIR,
    gateway_config,
    load_case,
    raw_request,
    start_fake_upstream,
    start_gateway,
)

CASES = sorted(p.stem for p in COMPAT_DIR.glob("*.yaml")) if COMPAT_DIR.is_dir() else []


def builtin_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A compat ``builtin_rules`` entry as a scarfgw rule."""
    if rule["type"] == "pixel":
        return {
            "type": "pixel-v1",
            "domain": rule["domain"],
            "content-type": rule["content_type"],
            "image-base64": base64.b64encode(rule["body"].encode()).decode(),
        }
    return {"type": "scarf-js-v1", "domain": rule["domain"]}


def target_of(request: dict[str, Any]) -> str:
    """The request target: path, then ``?query`` when a query is given (``""``: bare ``?``)."""
    query = request.get("query")
    return request["path"] if query is None else f"{request['path']}?{query}"


def assert_events_match(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Compare the kind-specific keys the case lists (scarfgw adds common keys)."""
    assert len(actual) == len(expected), actual
    for got, want in zip(actual, expected, strict=True):
        want = {"body_variables": {}, **want} if want["kind"] in ("file", "catchall") else want
        projected = {key: got.get(key, {} if key == "body_variables" else None) for key in want}
        assert projected == want


def test_compat_cases_present() -> None:
    if not COMPAT_DIR.is_dir():
        pytest.skip(f"compat cases not found at {COMPAT_DIR}")
    assert len(CASES) == 75


@pytest.mark.parametrize("name", CASES)
@pytest_twisted.inlineCallbacks
def test_compat_case(name: str, tmp_path: Path) -> Any:
    case = load_case(name)
    request = case["request"]
    expect = case["expect"]
    rules = list(case["config"]["rules"]) + [builtin_rule(r) for r in case.get("builtin_rules", [])]
    upstream = case.get("upstream")
    fake = None
    sections: dict[str, Any] = {"rules": rules}
    if upstream:
        response = upstream["fake_response"]
        fake = yield start_fake_upstream(response["status"], response.get("headers"),
                                         response.get("body", "").encode())
        sections["proxy"] = {"upstreams": {upstream["target"]["host"]: fake.url}}
    gateway = yield start_gateway(tmp_path, gateway_config(tmp_path, **sections))
    try:
        headers = list(request.get("headers", {}).items())
        if not any(name.lower() == "host" for name, _ in headers):
            headers.insert(0, ("Host", f"127.0.0.1:{gateway.port}"))
        response = yield raw_request(
            gateway.port, request.get("method", "GET"), target_of(request), headers,
            request.get("body", "").encode(),
        )
    finally:
        yield gateway.stop()
        if fake is not None:
            yield fake.port.stopListening()

    assert response.status == expect["status"]
    for header, value in (expect.get("headers") or {}).items():
        assert response.header(header) == str(value), header
    for header in expect.get("headers_present") or []:
        assert response.header(header) is not None, header
    if "body" in expect:
        assert response.body == expect["body"].encode()
    assert_events_match(gateway.events(), expect.get("events", []))
    if upstream:
        target = upstream["target"]
        assert fake is not None and len(fake.received) == 1
        received = fake.received[0]
        assert (received.method, received.path, received.query) == (
            target["method"], target["path"], target["query"])
        for header, value in (target.get("headers_include") or {}).items():
            assert any(k.lower() == header.lower() and v == value
                       for k, v in received.headers), header
