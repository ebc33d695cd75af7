"""The operator's company overrides: networks or ASNs that belong to a known company.

A text file, one override a line: a network (``203.0.113.0/24``, ``2001:db8::/32``, or a
single address) or an ASN (``AS64500``), then whitespace, then the company's name; ``#``
starts a comment. The most specific network wins, then the ASN. An overridden origin is
recorded with that ``org`` and ``type: business``, whatever the databases said.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CompanyOverrides:
    """Networks (per prefix length, longest first) and ASNs mapped to company names."""

    source: str
    networks: tuple[tuple[int, int, dict[int, str]], ...] = ()
    """(address size in bits, prefix length, {network as integer: company})."""
    asns: dict[int, str] = field(default_factory=dict)

    def company(self, address: str, asn: int | None) -> str | None:
        """The company of ``address`` (or of ``asn``), or None."""
        host = address.partition("%")[0]
        try:
            packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except (OSError, ValueError):
            return None
        if len(packed) == 16 and packed[:12] == bytes(10) + b"\xff\xff":
            packed = packed[12:]
        bits = len(packed) * 8
        number = int.from_bytes(packed, "big")
        for size, prefix, table in self.networks:
            if size == bits:
                found = table.get(number >> (bits - prefix) << (bits - prefix))
                if found is not None:
                    return found
        return self.asns.get(asn) if asn is not None else None


def parse_overrides(path: str, content: bytes) -> CompanyOverrides:
    """The overrides file at ``path``, as read (``content``); ValueError names the file, the
    line and the reason."""
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    tables: dict[tuple[int, int], dict[int, str]] = {}
    asns: dict[int, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        key, _, company = line.partition(" ")
        company = company.strip()
        if not company:
            raise ValueError(f"{path}:{number}: expected a network or ASN, then a company name")
        if key.upper().startswith("AS") and key[2:].isdigit():
            asns[int(key[2:])] = company
            continue
        try:
            network = ipaddress.ip_network(key, strict=False)
        except ValueError:
            raise ValueError(f"{path}:{number}: not a network or ASN: {key!r}") from None
        table = tables.setdefault((network.max_prefixlen, network.prefixlen), {})
        table[int(network.network_address)] = company
    ordered = sorted(tables.items(), key=lambda item: -item[0][1])
    return CompanyOverrides(path, tuple((size, prefix, table)
                                        for (size, prefix), table in ordered), asns)
