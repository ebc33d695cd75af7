"""GeoIP enrichment with small MaxMind-format databases written by ``mmdb-writer``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scarfgw.analytics.event import build_event

pytest.importorskip("maxminddb")

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
        assert geoip.lookup(address) == {"country": country, "org": org}
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
                               "org": "Example Networks"}
    assert event["client"] == {"runtime": "curl", "version": "8.5.0"}
    assert "203.0.113.77" not in json.dumps(event)


def test_at_least_one_database() -> None:
    with pytest.raises(ValueError, match="at least one database"):
        GeoIP([])
