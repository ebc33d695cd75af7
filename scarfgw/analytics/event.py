"""The analytics event record: common keys of design.md ("Events") plus a rule's capture.

The raw client address never leaves this module: only its network (/24 for IPv4,
/48 for IPv6) is written, as ``origin.network``, with what an optional enricher (GeoIP:
``origin.country``, ``origin.org``) derived from it. ``client`` holds the runtime and
version read from the User-Agent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from scarfgw.analytics.useragent import client_runtime
from scarfgw.rules.decision import Capture

Enricher = Callable[[str], Mapping[str, str | None]]
"""Extra ``origin`` keys for a raw client address, e.g. :meth:`GeoIP.lookup`."""

_IPV4_MAPPED: Final = bytes(10) + b"\xff\xff"
_OCTETS: Final = tuple(str(octet) for octet in range(256))


class _RequestIds:
    """This process's request-id prefix (random) and counter."""

    prefix: str
    count: int

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        """A new prefix (in a forked child: the parent's must not repeat)."""
        self.prefix = os.urandom(8).hex()
        self.count = 0


# Mutable module state lives in Final objects: compiled, a Final name is a C variable, a
# reassigned one a lookup in the module's dict on every use.
_IDS: Final = _RequestIds()
os.register_at_fork(after_in_child=_IDS.reseed)

_SIXTEEN_HEX_DIGITS: Final = 1 << 64


def new_request_id() -> str:
    """A unique request id: a random per-process prefix (renewed on fork) plus a counter.

    32 lower-case hex characters, like ``uuid4().hex`` but about 15 times cheaper. The
    counter is written with ``hex()`` of ``count + 2**64`` minus its ``0x1``: compiled,
    that takes 140 ns against 440 ns for an ``:016x`` format.
    """
    ids = _IDS
    ids.count += 1
    return ids.prefix + hex(ids.count | _SIXTEEN_HEX_DIGITS)[3:]


def suppressed_by_privacy(dnt: str | None, gpc: str | None) -> bool:
    """True when the request asks not to be tracked (``DNT: 1`` or ``Sec-GPC: 1``)."""
    return (dnt is not None and dnt.strip() == "1") or (gpc is not None and gpc.strip() == "1")


@lru_cache(maxsize=4096)
def origin_network(client_ip: str | None) -> str | None:
    """The client's network in CIDR notation (/24 IPv4, /48 IPv6); None if unknown or invalid.

    IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) count as IPv4; an IPv6 zone is ignored.
    Uses ``inet_pton``/``inet_ntop``: about 0.5 us, against 6-16 us with ``ipaddress``; the
    last 4,096 addresses are remembered (a client sends many requests).
    """
    if not client_ip:
        return None
    host = client_ip.partition("%")[0]
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        return None
    if len(packed) == 16:
        if packed[:12] != _IPV4_MAPPED:
            return socket.inet_ntop(socket.AF_INET6, packed[:6] + bytes(10)) + "/48"
        packed = packed[12:]
    return f"{_OCTETS[packed[0]]}.{_OCTETS[packed[1]]}.{_OCTETS[packed[2]]}.0/24"


class _SecondPrefix:
    """The formatted date and time of day of the last second :func:`format_time` saw."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""


_SECOND: Final = _SecondPrefix()
_MILLISECONDS: Final = tuple(f".{milliseconds:03d}Z" for milliseconds in range(1000))


def format_time(time: float) -> str:
    """``time`` (Unix seconds) as ISO 8601 UTC with milliseconds: ``2026-11-22T10:00:00.123Z``.

    The date and time of day are formatted once per second; only the milliseconds change.
    """
    second = int(time // 1)
    microseconds = round((time - second) * 1_000_000)
    if microseconds >= 1_000_000:
        second, microseconds = second + 1, microseconds - 1_000_000
    cache = _SECOND
    if cache.second != second:
        cache.text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cache.second = second
    return cache.text + _MILLISECONDS[microseconds // 1000]


_COMMON_KEYS: Final = frozenset({"time", "request_id", "domain", "method", "path", "status",
                                 "user_agent", "referer", "origin", "client", "complete"})


def build_event(
    capture: Capture,
    *,
    time: float,
    request_id: str,
    domain: str,
    method: str,
    path: str,
    status: int,
    user_agent: str | None,
    referer: str | None,
    client_ip: str | None,
    enrich: Enricher | None = None,
    complete: bool = True,
) -> dict[str, Any]:
    """The event record: the common keys, then the capture's keys, and ``"complete":
    false`` when the response body was not delivered whole (the key is absent otherwise).

    A capture key never replaces a common key (``origin`` in particular stays the truncated
    network plus what ``enrich`` returns); the raw ``client_ip`` is not part of the result.
    """
    origin: dict[str, str | None] = {"network": origin_network(client_ip)}
    if enrich is not None and client_ip:
        for key, value in enrich(client_ip).items():
            origin.setdefault(key, value)
    event: dict[str, Any] = {
        "time": format_time(time),
        "request_id": request_id,
        "domain": domain,
        "method": method,
        "path": path,
        "status": status,
        "user_agent": user_agent,
        "referer": referer,
        "origin": origin,
        "client": client_runtime(user_agent),
    }
    if _COMMON_KEYS.isdisjoint(capture):
        event.update(capture)
    else:
        for name, captured in capture.items():
            event.setdefault(name, captured)
    if not complete:
        event["complete"] = False
    return event
