"""Renewal timing: a third of the lifetime left, jitter, ARI windows, backoff."""

from __future__ import annotations

import random

from scarfgw.tls.schedule import Timing, ari_time, backoff, renewal_time

DAY = 86400.0


def test_renewal_starts_when_a_third_of_the_lifetime_is_left():
    timing = Timing(jitter=0.0)
    assert renewal_time(0, 90 * DAY, timing, random.Random(1)) == 60 * DAY
    assert renewal_time(0, 6 * DAY, timing, random.Random(1)) == 4 * DAY


def test_jitter_only_moves_renewal_earlier_within_its_fraction():
    timing = Timing(jitter=1 / 30)
    rng = random.Random(7)
    times = [renewal_time(0, 6 * DAY, timing, rng) for _ in range(200)]
    assert all(4 * DAY - 6 * DAY / 30 <= t <= 4 * DAY for t in times)
    assert len(set(times)) > 100


def test_ari_picks_a_moment_inside_the_window():
    rng = random.Random(3)
    assert all(100 <= ari_time(100, 200, rng) <= 200 for _ in range(100))
    assert ari_time(100, 50, rng) == 100


def test_backoff_walks_the_table_and_stays_at_its_end():
    table = (60.0, 120.0, 300.0)
    assert [backoff(n, table) for n in (1, 2, 3, 4, 10)] == [60, 120, 300, 300, 300]
