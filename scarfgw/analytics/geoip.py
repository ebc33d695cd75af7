"""Country and network organisation of a client address, from MaxMind-format databases.

Works with GeoLite2/GeoIP2 Country or City (``country.iso_code``), ASN
(``autonomous_system_organization``) and ISP (``organization``, ``isp``) databases, and with
other ``.mmdb`` files that use those keys. MaxMind ships country and ASN data in separate
files: give both, the first database with an answer wins for each field. Lookups use the
``maxminddb`` C extension on a memory-mapped file (a few microseconds each).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import maxminddb

_MAPPED_PREFIX = "::ffff:"


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


class GeoIP:
    """Looks up ``{"country": ..., "org": ...}`` for an address; never keeps the address."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        if not paths:
            raise ValueError("events.geoip.databases: at least one database is required")
        self._readers = [maxminddb.open_database(os.fspath(path)) for path in paths]

    def lookup(self, address: str) -> dict[str, str | None]:
        """Country (ISO 3166 code) and organisation; None for what no database knows."""
        host = address.partition("%")[0]
        if host[: len(_MAPPED_PREFIX)].lower() == _MAPPED_PREFIX and "." in host:
            host = host[len(_MAPPED_PREFIX):]
        country: str | None = None
        org: str | None = None
        for reader in self._readers:
            try:
                record = reader.get(host)
            except ValueError:
                continue
            if isinstance(record, Mapping):
                country = country or _country(record)
                org = org or _org(record)
        return {"country": country, "org": org}

    def close(self) -> None:
        """Unmap the database files."""
        for reader in self._readers:
            reader.close()
