"""GeoIP enrichment with small MaxMind-format databases written by ``mmdb-writer``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scarfgw.analytics.event import build_event

pytest.importorskip("maxminddb")

from scarfgw.analytics.companies import parse_overrides
from scarfgw.analytics.geoip import GeoIP


@pytest.mark.parametrize(("address", "country", "org"), [
    ("203.0.113.77", "DE", "Example Networks"),
    ("203.0.113.200", "DE", None),
    ("::ffff:203.0.113.77", "DE", "Example Networks"),
    ("198.51.100.1", "NL", None),
    ("2001:db8::1%eth0", "FR", None),
    ("192.0.2.1", None, None),
    ("not an address", None, None),
])
def test_lookup(geoip_databases: list[Path], address: str, country: str | None, org: str | None
                ) -> None:
    geoip = GeoIP(geoip_databases)
    try:
        assert geoip.lookup(address) == {"country": country, "org": org, "type": None}
    finally:
        geoip.close()


def test_event_gets_country_and_org_but_not_the_address(geoip_databases: list[Path]) -> None:
    geoip = GeoIP(geoip_databases)
    try:
        event = build_event(
            {"kind": "pixel", "package": None, "pixel_id": "p"}, time=0, request_id="r",
            domain="d", method="GET", path="/", status=200, user_agent="curl/8.5.0",
            referer=None, client_ip="203.0.113.77", enrich=geoip.lookup,
        )
    finally:
        geoip.close()
    assert event["origin"] == {"network": "203.0.113.0/24", "country": "DE",
                               "org": "Example Networks", "type": None}
    assert event["client"] == {"runtime": "curl", "version": "8.5.0"}
    assert "203.0.113.77" not in json.dumps(event)


def test_at_least_one_database() -> None:
    with pytest.raises(ValueError, match="at least one database"):
        GeoIP([])


@pytest.mark.parametrize(("address", "org", "kind"), [
    ("198.51.100.7", "Big Cable", "isp"),
    ("192.0.2.7", "Cloudy Hosting", "hosting"),
    ("203.0.113.7", "Example Corp", "business"),
    ("100.64.3.4", "Uni Example", "education"),
])
def test_connection_and_user_types(typed_databases: list[Path], address: str, org: str,
                                   kind: str) -> None:
    geoip = GeoIP(typed_databases)
    try:
        assert geoip.lookup(address) == {"country": None, "org": org, "type": kind}
    finally:
        geoip.close()


def test_operator_overrides_win_by_network_then_asn(typed_databases: list[Path],
                                                    tmp_path: Path) -> None:
    overrides = tmp_path / "companies.txt"
    overrides.write_text("# network or ASN, then the company\n"
                         "198.51.100.128/25  Cable Customer Inc\n"
                         "198.51.100.200     Single Host Ltd   # one address\n"
                         "AS64502 Hosted Startup\n")
    geoip = GeoIP(typed_databases, parse_overrides(str(overrides), overrides.read_bytes()))
    try:
        assert geoip.lookup("198.51.100.200")["org"] == "Single Host Ltd"
        assert geoip.lookup("198.51.100.130") == {"country": None, "org": "Cable Customer Inc",
                                                  "type": "business"}
        assert geoip.lookup("198.51.100.7")["org"] == "Big Cable"
        assert geoip.lookup("192.0.2.9") == {"country": None, "org": "Hosted Startup",
                                             "type": "business"}
    finally:
        geoip.close()


@pytest.mark.parametrize(("text", "reason"), [
    ("10.0.0.0/8\n", ":1: expected a network or ASN"),
    ("# fine\nnot-a-net Foo\n", ":2: not a network or ASN: 'not-a-net'"),
])
def test_bad_overrides_name_the_line(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "companies.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason):
        parse_overrides(str(path), path.read_bytes())
