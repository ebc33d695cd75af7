"""Every shared/compat case through the pure core (Router) — no sockets.

The real-socket run of the same cases is tests/integration/test_compat.py.
"""

from __future__ import annotations

import pytest

from scarfgw.rules.decision import Proxy, Redirect, Respond
from scarfgw.rules.manifest import parse_rules
from scarfgw.rules.request import Headers, RequestView, routing_host
from scarfgw.rules.router import Router
from tests.compat import CASE_NAMES, assert_events_match, case_rules, load_case


@pytest.mark.parametrize("name", CASE_NAMES)
def test_compat_case_through_the_router(name: str) -> None:
    case = load_case(name)
    spec = case["request"]
    headers = Headers((key, str(value)) for key, value in spec.get("headers", {}).items())
    view = RequestView(
        spec.get("method", "GET"),
        routing_host(headers.get("x-forwarded-host") or headers.get("host") or ""),
        spec["path"],
        spec.get("query"),
        headers,
        spec.get("body", "").encode(),
    )
    decision = Router(parse_rules(case_rules(case), "rules")).route(view)
    expect = case["expect"]
    upstream = case.get("upstream")
    if upstream is not None:
        assert isinstance(decision, Proxy)
        assert decision.backend == upstream["target"]["host"]
    elif isinstance(decision, Redirect):
        assert decision.status == expect["status"]
        assert {"location": decision.location} == {
            key.lower(): value for key, value in expect.get("headers", {}).items()
        }
    else:
        assert isinstance(decision, Respond)
        assert decision.status == expect["status"]
        sent = {key.lower(): value for key, value in decision.headers}
        for header, value in (expect.get("headers") or {}).items():
            assert sent.get(header.lower()) == str(value), header
        for header in expect.get("headers_present") or []:
            assert header.lower() in sent, header
        if "body" in expect:
            assert decision.body == expect["body"].encode()
    assert_events_match(decision.captures, expect["events"])
