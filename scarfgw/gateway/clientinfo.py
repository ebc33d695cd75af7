"""Who is asking: routing host and client address, believing X-Forwarded-* only from
trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

_CACHE_LIMIT: Final = 4096

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Answers "is this peer a trusted proxy?" with a small per-address cache."""

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        self._networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        known = self._cache.get(address)
        if known is None:
            known = self._lookup(address)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[address] = known
        return known

    def _lookup(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


def forwarded_chain(values: Sequence[str]) -> list[str]:
    """Addresses of X-Forwarded-For header values, in order (several headers concatenated)."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def client_address(peer: str | None, chain: Sequence[str], trusted: TrustedProxies) -> str | None:
    """The client's address: walk X-Forwarded-For from the right while hops are trusted.

    ``chain`` must only be given when ``peer`` is trusted.
    """
    if peer is None or peer not in trusted:
        return peer
    address = peer
    for hop in reversed(chain):
        address = hop
        if hop not in trusted:
            break
    return address
