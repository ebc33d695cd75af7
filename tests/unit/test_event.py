"""The event record: common keys, time format, origin truncation, ids, privacy."""

from __future__ import annotations

import json
import os

import pytest

from scarfgw.analytics.event import build_event, new_request_id, suppressed_by_privacy
from scarfgw.ops.formats import format_time, origin_network

DOCKER_CAPTURE = {
    "kind": "docker", "package": "pkg-1", "image": "library/hello", "reference": "latest",
    "backend": "ghcr.io", "auto_create_rule": None,
}


def _event(client_ip: str | None = "203.0.113.77", capture: dict | None = None) -> dict:
    return build_event(
        DOCKER_CAPTURE if capture is None else capture, time=1795000000.1234, request_id="r1",
        domain="cr.example.com", method="GET", path="/v2/library/hello/manifests/latest",
        status=307, user_agent="docker/27.0", referer=None, client_ip=client_ip,
    )


def test_event_has_common_keys_then_capture_keys_in_order():
    event = _event()
    assert list(event) == [
        "time", "request_id", "domain", "method", "path", "status", "user_agent", "referer",
        "origin", "client", "kind", "package", "image", "reference", "backend", "auto_create_rule",
    ]
    assert event["time"] == "2026-11-18T11:06:40.123Z"
    assert event["origin"] == {"network": "203.0.113.0/24"}
    assert event["status"] == 307 and event["referer"] is None
    assert event["image"] == "library/hello"


def test_raw_ip_never_in_the_serialised_event():
    assert "203.0.113.77" not in json.dumps(_event("203.0.113.77"))
    assert "2001:db8:1234:5678" not in json.dumps(_event("2001:db8:1234:5678::99"))


def test_capture_cannot_replace_common_keys():
    event = _event(capture={"kind": "pixel", "package": None, "origin": "x", "time": 0})
    assert event["origin"] == {"network": "203.0.113.0/24"}
    assert event["time"] == "2026-11-18T11:06:40.123Z"
    assert event["kind"] == "pixel"


def test_no_capture_key_replaces_any_common_key():
    common = _event(capture={})
    event = _event(capture={**{key: "x" for key in reversed(common)}, "extra": 1})
    assert event == {**common, "extra": 1}
    assert list(event) == [*common, "extra"]


@pytest.mark.parametrize(
    ("client_ip", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("10.0.0.255", "10.0.0.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("2001:DB8:ABCD:FFFF:1:2:3:4", "2001:db8:abcd::/48"),
        ("::1", "::/48"),
        ("fe80::1%eth0", "fe80::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        (None, None),
        ("", None),
        ("not-an-ip", None),
        ("1.2.3", None),
        ("256.1.1.1", None),
        ("1.2.3.4\x00", None),
    ],
)
def test_origin_network_truncation(client_ip, network):
    assert origin_network(client_ip) == network
    assert _event(client_ip)["origin"] == {"network": network}


def test_time_format_milliseconds_utc():
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1795000000.9999) == "2026-11-18T11:06:40.999Z"


def test_request_ids_unique_hex_and_renewed_after_fork():
    ids = {new_request_id() for _ in range(10000)}
    assert len(ids) == 10000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    assert child_id[:16] != new_request_id()[:16]


@pytest.mark.parametrize(
    ("dnt", "gpc", "suppressed"),
    [
        ("1", None, True),
        (None, "1", True),
        (" 1 ", None, True),
        ("1", "1", True),
        ("0", "0", False),
        (None, None, False),
        ("", "", False),
        ("yes", "true", False),
    ],
)
def test_privacy_headers(dnt, gpc, suppressed):
    assert suppressed_by_privacy(dnt, gpc) is suppressed


def test_format_time_matches_datetime_including_rounding_edges():
    from datetime import UTC, datetime

    for moment in (1580900410.8039997, 1.9999999, 1.9999996, 0.0005, 1e9 + 0.9995, 1763805600.0,
                   1763805600.123, 1763805659.9999):
        expected = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
        assert format_time(moment) == expected.removesuffix("+00:00") + "Z"
