"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scarfgw"


def _compiled_modules() -> list[tuple[Path, Path]]:
    """``(source, extension)`` of each module compiled in place by mypyc (``make venv``)."""
    pairs = []
    for extension in sorted(PACKAGE.rglob("*.so")):
        source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
        if source.exists():
            pairs.append((source, extension))
    return pairs


def pytest_report_header() -> str:
    """Say whether the run tests the compiled modules or pure Python."""
    count = len(_compiled_modules())
    return (f"scarfgw: {count} modules compiled with mypyc" if count
            else "scarfgw: pure Python (no compiled modules)")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test compiled modules built before a compiled module's source last changed:
    Python would import the stale extension, not the edited source."""
    pairs = _compiled_modules()
    if not pairs:
        return
    built = min(extension.stat().st_mtime for _, extension in pairs)
    edited = [str(source.relative_to(PACKAGE.parent)) for source, _ in pairs
              if source.stat().st_mtime > built]
    if edited:
        pytest.exit(f"compiled modules are older than {', '.join(edited)}: "
                    "run `make venv` to rebuild them (or `make pure`)", returncode=2)


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


@pytest.fixture
def typed_databases(tmp_path: Path) -> list[Path]:
    """An ISP-like database with ASNs, a Connection-Type one and an Enterprise-like one
    (``traits.user_type``), written with ``mmdb-writer``."""
    mmdb_writer = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    isp = mmdb_writer.MMDBWriter(ip_version=4, database_type="GeoIP2-ISP")
    for network, asn, org in [("198.51.100.0/24", 64501, "Big Cable"),
                              ("192.0.2.0/24", 64502, "Cloudy Hosting"),
                              ("203.0.113.0/24", 64503, "Example Corp"),
                              ("100.64.0.0/16", 64504, "Uni Example")]:
        isp.insert_network(netaddr.IPSet([network]), {"autonomous_system_number": asn,
                                                      "isp": org, "organization": org})
    connection = mmdb_writer.MMDBWriter(ip_version=4, database_type="GeoIP2-Connection-Type")
    connection.insert_network(netaddr.IPSet(["198.51.100.0/24"]), {"connection_type": "Cable/DSL"})
    connection.insert_network(netaddr.IPSet(["203.0.113.0/24"]), {"connection_type": "Corporate"})
    enterprise = mmdb_writer.MMDBWriter(ip_version=4, database_type="GeoIP2-Enterprise")
    enterprise.insert_network(netaddr.IPSet(["192.0.2.0/24"]),
                              {"traits": {"user_type": "hosting"}})
    enterprise.insert_network(netaddr.IPSet(["100.64.0.0/16"]),
                              {"traits": {"user_type": "college"}})
    paths = [tmp_path / "isp.mmdb", tmp_path / "connection.mmdb", tmp_path / "enterprise.mmdb"]
    for writer, path in zip([isp, connection, enterprise], paths, strict=True):
        writer.to_db_file(str(path))
    return paths
