"""Every case of shared/compat against a real gateway listening on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.compat import (
    CASE_NAMES,
    COMPAT_DIR,
    EXPECTED_CASE_COUNT,
    assert_events_match,
    case_rules,
    load_case,
    request_target,
)
from tests.support import gateway_config, raw_request, start_fake_upstream, start_gateway


def test_compat_cases_present() -> None:
    if not COMPAT_DIR.is_dir():
        pytest.skip(f"compat cases not found at {COMPAT_DIR}")
    assert len(CASE_NAMES) == EXPECTED_CASE_COUNT


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest_twisted.inlineCallbacks
def test_compat_case(name: str, tmp_path: Path) -> Any:
    case = load_case(name)
    request = case["request"]
    expect = case["expect"]
    rules = case_rules(case)
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
            gateway.port, request.get("method", "GET"), request_target(request), headers,
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
