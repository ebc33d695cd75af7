"""Country, network organisation and connection type of a client address, from
MaxMind-format databases.

Works with GeoLite2/GeoIP2 Country or City (``country.iso_code``), ASN
(``autonomous_system_organization``), ISP (``organization``, ``isp``), Connection-Type
(``connection_type``) and Enterprise (``traits.user_type``) databases, and with other
``.mmdb`` files that use those keys. MaxMind ships them in separate files: give several,
the first database with an answer wins for each field. ``type`` is ``business``, ``isp``,
``hosting`` or ``education`` where a database says (insights counts an org as a company
unless it is an ISP or a hosting provider); the operator's :class:`CompanyOverrides` win
over every database. Lookups use the ``maxminddb`` C extension on a memory-mapped file (a
few microseconds each).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import maxminddb

from scarfgw.analytics.companies import CompanyOverrides

_MAPPED_PREFIX = "::ffff:"
_USER_TYPES = {
    "business": "business", "government": "business", "military": "business",
    "cafe": "isp", "cellular": "isp", "residential": "isp", "router": "isp",
    "traveler": "isp", "consumer_privacy_network": "isp",
    "hosting": "hosting", "content_delivery_network": "hosting",
    "search_engine_spider": "hosting",
    "college": "education", "school": "education", "library": "education",
}
_CONNECTION_TYPES = {"Corporate": "business", "Cable/DSL": "isp", "Cellular": "isp",
                     "Dial-up": "isp", "Satellite": "isp"}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _country(record: Mapping[str, object]) -> str | None:
    for key in ("country", "registered_country"):
        section = record.get(key)
        if isinstance(section, Mapping) and _text(section.get("iso_code")):
            return _text(section.get("iso_code"))
    return None


def _org(record: Mapping[str, object]) -> str | None:
    for key in ("autonomous_system_organization", "organization", "isp"):
        if _text(record.get(key)):
            return _text(record.get(key))
    return None


def _type(record: Mapping[str, object]) -> str | None:
    traits = record.get("traits")
    sources = [record, traits] if isinstance(traits, Mapping) else [record]
    for source in sources:
        found = _USER_TYPES.get(str(source.get("user_type")))
        found = found or _CONNECTION_TYPES.get(str(source.get("connection_type")))
        if found:
            return found
    return None


def _asn(record: Mapping[str, object]) -> int | None:
    value = record.get("autonomous_system_number")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class GeoIP:
    """Looks up ``{"country", "org", "type"}`` for an address; never keeps the address."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]],
                 overrides: CompanyOverrides | None = None) -> None:
        if not paths:
            raise ValueError("events.geoip.databases: at least one database is required")
        self._readers = [maxminddb.open_database(os.fspath(path)) for path in paths]
        self._overrides = overrides

    def lookup(self, address: str) -> dict[str, str | None]:
        """Country (ISO 3166 code), organisation and its type; None for what no database
        knows."""
        host = address.partition("%")[0]
        if host[: len(_MAPPED_PREFIX)].lower() == _MAPPED_PREFIX and "." in host:
            host = host[len(_MAPPED_PREFIX):]
        country: str | None = None
        org: str | None = None
        kind: str | None = None
        asn: int | None = None
        for reader in self._readers:
            try:
                record = reader.get(host)
            except ValueError:
                continue
            if isinstance(record, Mapping):
                country = country or _country(record)
                org = org or _org(record)
                kind = kind or _type(record)
                asn = asn or _asn(record)
        if self._overrides is not None:
            company = self._overrides.company(host, asn)
            if company is not None:
                org, kind = company, "business"
        return {"country": country, "org": org, "type": kind}

    def close(self) -> None:
        """Unmap the database files."""
        for reader in self._readers:
            reader.close()
