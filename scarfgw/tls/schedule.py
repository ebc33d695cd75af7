"""When to renew, re-check and retry: pure functions of times and counts."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """The certificate manager's intervals, in seconds."""

    maintenance_interval: float = 600.0
    lock_retry: float = 1.0
    lock_refresh: float = 5.0
    lock_stale_after: float = 10.0
    renew_when_left: float = 1 / 3
    jitter: float = 1 / 30
    order_backoff: tuple[float, ...] = (
        60, 120, 300, 600, 1200, 1800, 3600, 7200, 10800, 21600,
    )
    verify_backoff: tuple[float, ...] = (60, 120, 300, 600, 1800, 3600)


def renewal_time(not_before: float, not_after: float, timing: Timing,
                 rng: random.Random) -> float:
    """Renew when ``renew_when_left`` of the lifetime is left, up to ``jitter`` of it earlier."""
    lifetime = not_after - not_before
    latest = not_after - lifetime * timing.renew_when_left
    return latest - rng.uniform(0, lifetime * timing.jitter)


def ari_time(start: float, end: float, rng: random.Random) -> float:
    """A uniformly random moment in the CA's suggested renewal window (RFC 9773 4.2)."""
    return start + rng.uniform(0, max(0.0, end - start))


def backoff(failures: int, table: tuple[float, ...]) -> float:
    """The wait after ``failures`` consecutive failures (>= 1): the table, then its last entry."""
    return table[min(max(failures, 1), len(table)) - 1]
