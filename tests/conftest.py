"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def geoip_databases(tmp_path: Path) -> list[Path]:
    """A dual-stack GeoLite2-Country-like file and an IPv4-only GeoLite2-ASN-like file,
    written with ``mmdb-writer``."""
    mmdb_writer = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    country = mmdb_writer.MMDBWriter(ip_version=6, ipv4_compatible=True,
                                     database_type="GeoLite2-Country")
    country.insert_network(netaddr.IPSet(["203.0.113.0/24"]),
                           {"country": {"iso_code": "DE", "names": {"en": "Germany"}}})
    country.insert_network(netaddr.IPSet(["198.51.100.0/24"]),
                           {"registered_country": {"iso_code": "NL"}})
    country.insert_network(netaddr.IPSet(["2001:db8::/32"]), {"country": {"iso_code": "FR"}})
    asn = mmdb_writer.MMDBWriter(ip_version=4, database_type="GeoLite2-ASN")
    asn.insert_network(netaddr.IPSet(["203.0.113.0/25"]),
                       {"autonomous_system_number": 64500,
                        "autonomous_system_organization": "Example Networks"})
    paths = [tmp_path / "country.mmdb", tmp_path / "asn.mmdb"]
    country.to_db_file(str(paths[0]))
    asn.to_db_file(str(paths[1]))
    return paths


