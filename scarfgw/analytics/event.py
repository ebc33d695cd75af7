"""The analytics event record: common keys of design.md ("Events") plus a rule's capture.

The raw client address never leaves this module: only its network (/24 for IPv4,
/48 for IPv6, :func:`~scarfgw.ops.formats.origin_network`) is written, as
``origin.network``, with what an optional enricher (GeoIP: ``origin.country``,
``origin.org``) derived from it. ``client`` holds the runtime and version read from the
User-Agent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final

from scarfgw.analytics.useragent import client_runtime
from scarfgw.ops.formats import format_time, origin_network
from scarfgw.rules.decision import Capture

Enricher = Callable[[str], Mapping[str, str | None]]
"""Extra ``origin`` keys for a raw client address, e.g. :meth:`GeoIP.lookup`."""


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
    for name, captured in capture.items():  # compiled: cheaper than a disjointness test
        event.setdefault(name, captured)     # and update() (2.6k against 4.1k instructions)
    if not complete:
        event["complete"] = False
    return event
