"""The all-package totals of a real DuckDB store agree with the per-package counts at every
step of the follower (events recent or sorted into runs, days counted or not), and after
late events change days already counted."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from scarfgw.insights.embedded import DuckDBStore
from scarfgw.insights.follow import Follower

FIRST = date(2026, 11, 20)
DAYS = 4
PACKAGES = {"hello": "docker", "six": "python", "tool": "file"}
NETWORKS = ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24")
RUNTIMES = {"docker": ("docker", "containerd"), "python": ("pip", "uv"), "file": ("curl", "wget")}
ORGS = (("Example Corp", "business"), ("Big Cable", "isp"), ("Cloudy", "hosting"),
        ("Uni", "education"), (None, None))
GAPS = (0, 0, 1, 30, 59, 60, 61, 90, 300)
"""Seconds between the requests of a burst: ties, within the window, at its edge, beyond."""
DIGEST = "sha256:" + "c" * 64


def event(number: int, moment: float, package: str, network: str, runtime: str,
          version: str, org: tuple[str | None, str | None]) -> dict[str, Any]:
    """A download request of ``package`` (a docker ``version`` may be a digest)."""
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    record: dict[str, Any] = {
        "time": f"{stamp}.{number % 1000:03d}Z", "request_id": f"{number:08x}",
        "domain": "d.example.test", "method": "GET", "path": f"/{package}/{version}",
        "status": 307, "user_agent": f"{runtime}/1.0", "referer": None,
        "origin": {"network": network, "country": "DE", "org": org[0], "type": org[1]},
        "client": {"runtime": runtime, "version": "1.0"}, "kind": PACKAGES[package],
        "package": package}
    if PACKAGES[package] == "docker":
        record.update(image=f"library/{package}", reference=version, object="manifest")
    elif PACKAGES[package] == "python":
        record.update(version=version, file=f"{package}-{version}.whl")
    else:
        record.update(variables={"version": version})
    return record


def epoch(day: date) -> float:
    return datetime.combine(day, time(), UTC).timestamp()


def bursts(rng: random.Random, count: int, numbers: list[int], day: date | None = None,
           at: float | None = None) -> list[dict[str, Any]]:
    """``count`` bursts of requests of one package, network and runtime (their versions,
    digests and organisations vary), some across midnight."""
    events = []
    for _ in range(count):
        package = rng.choice(sorted(PACKAGES))
        runtime = rng.choice(RUNTIMES[PACKAGES[package]])
        network = rng.choice(NETWORKS)
        start = day or FIRST + timedelta(rng.randrange(DAYS))
        moment = epoch(start) + (at if at is not None else rng.choice(
            (rng.randrange(86400), 86400 - rng.randrange(1, 200))))
        for _ in range(rng.randrange(1, 6)):
            version = rng.choice(("1.0", "1.0", "2.0"))
            if PACKAGES[package] == "docker" and rng.random() < 0.3:
                version = DIGEST
            numbers[0] += 1
            events.append(event(numbers[0], moment, package, network, runtime, version,
                                rng.choice(ORGS)))
            moment += rng.choice(GAPS)
    return events


def per_package(store: DuckDBStore, start: date, end: date) -> dict[str, tuple[int, int]]:
    """(downloads, companies) of each package with downloads, one package at a time."""
    answer = {}
    for package in PACKAGES:
        downloads = sum(p.downloads for p in store.downloads(package, start, end, "day", None))
        if downloads:
            answer[package] = (downloads, len(store.companies(package, start, end)))
    return answer


RANGES = [(FIRST + timedelta(first), FIRST + timedelta(last))
          for first, last in ((1, 1), (3, 3), (1, 2), (0, DAYS), (-3, 30))]
"""Days counted or not, ranges of several, beginning before the events, ending after."""


def agree(store: DuckDBStore) -> None:
    for start, end in RANGES:
        assert store.totals(start, end) == per_package(store, start, end), (start, end)


def write(path: Path, events: list[dict[str, Any]]) -> None:
    with path.open("ab") as handle:
        handle.writelines(json.dumps(record).encode() + b"\n" for record in events)


class CheckedStore(DuckDBStore):
    """The store, checking the totals before it counts days, and keeping which days were
    counted then."""

    before_counting: list[list[date]]

    def count_days(self) -> int:
        """Check, then count."""
        agree(self)
        self.before_counting.append(counted(self))
        return super().count_days()


def follow_checking(follower: Follower) -> list[tuple[int, int, list[date]]]:
    """Step until nothing is left, checking the totals after every step; answer what each
    step did (events added, sorted) and the counted days after it."""
    steps = []
    while True:
        result = follower.step()
        agree(follower.store)
        steps.append((result.added, result.sorted, counted(follower.store)))
        if not result.more:
            return steps


def counted(store: DuckDBStore) -> list[date]:
    return [row[0] for row in store.query("SELECT day FROM counted_days ORDER BY day")]


SETTLED = [FIRST + timedelta(offset) for offset in range(DAYS)]
NOON = epoch(FIRST + timedelta(DAYS)) + 43200
"""Now: noon of the day after the settled days."""


def test_totals_agree_with_each_package_recent_sorted_counted_and_late(tmp_path: Path) -> None:
    rng = random.Random(11)
    numbers = [0]
    events = bursts(rng, 300, numbers) + bursts(rng, 30, numbers, day=SETTLED[-1], at=0)
    events.append(event(0, NOON - 60, "six", NETWORKS[0], "pip",
                        "1.0", ORGS[0]))  # today: never counted
    rng.shuffle(events)  # the store takes them as they come, out of order
    path = tmp_path / "events.jsonl"
    write(path, events)
    store = CheckedStore(str(tmp_path / "i.duckdb"), threads=1, run_events=250,
                         clock=lambda: NOON)
    store.before_counting = []
    follower = Follower(store, [str(path)], chunk_bytes=path.stat().st_size // 3 + 1000)
    steps = follow_checking(follower)
    assert sum(added for added, _, _ in steps) == len(events)
    runs = len(events) // 250
    assert runs >= 3 and [moved for _, moved, _ in steps if moved] == [250] * runs
    assert [len(days) for _, moved, days in steps if moved] == [0] * runs  # sorted first
    assert any(0 < len(days) < DAYS for _, _, days in steps)  # then a few days a step
    assert counted(store) == SETTLED
    assert store.query("SELECT count(*) FROM events_recent") == [(len(events) % 250,)]
    assert set(store.totals(FIRST, SETTLED[-1])) == set(PACKAGES)

    # a chunk of the last seconds of a day joins the first sessions of the next one
    last_day = store.totals(SETTLED[-1], SETTLED[-1])
    groups = [(package, network, runtime) for package in PACKAGES for network in NETWORKS
              for runtime in RUNTIMES[PACKAGES[package]]]
    write(path, [event(numbers[0] + index + 1, epoch(SETTLED[-1]) - 30, *group, "1.0", ORGS[0])
                 for index, group in enumerate(groups)])
    numbers[0] += len(groups)
    store.before_counting.clear()
    follow_checking(follower)
    assert store.before_counting[0] == SETTLED[:-2]  # their day and the next one
    assert store.totals(SETTLED[-1], SETTLED[-1]) != last_day
    assert counted(store) == SETTLED

    # late events anywhere, across midnight, and a replay of stored ones
    before = store.totals(FIRST, SETTLED[-1])
    late = bursts(rng, 40, numbers, day=FIRST + timedelta(1), at=86400 - 5)
    late += bursts(rng, 20, numbers) + events[:50]
    rng.shuffle(late)
    write(path, late)
    follow_checking(follower)
    assert store.totals(FIRST, SETTLED[-1]) != before
    assert counted(store) == SETTLED
    store.close()


class LiveStore(DuckDBStore):
    """The store, keeping which runs of days its totals counted from their events."""

    live: list[tuple[date, date]]

    def _day_totals_of(self, first: date, last: date) -> str:
        """Note the run, then count as the store does."""
        self.live.append((first, last))
        return super()._day_totals_of(first, last)


def followed(tmp_path: Path, events: list[dict[str, Any]],
             now: list[float]) -> tuple[LiveStore, Follower]:
    """A store that followed a file of ``events`` to the end, its clock at ``now[0]``, and
    its follower."""
    path = tmp_path / "events.jsonl"
    write(path, events)
    store = LiveStore(str(tmp_path / "i.duckdb"), threads=1, clock=lambda: now[0])
    store.live = []
    follower = Follower(store, [str(path)])
    drain(follower)
    return store, follower


def drain(follower: Follower) -> list[bool]:
    """Step until nothing is left, checking the totals after every step; answer each
    step's ``more``."""
    steps = []
    while True:
        steps.append(follower.step().more)
        agree(follower.store)
        if not steps[-1]:
            return steps


TODAY = FIRST + timedelta(DAYS)


def test_a_badge_total_and_a_range_older_than_the_store_count_only_today_live(
        tmp_path: Path) -> None:
    rng = random.Random(5)
    events = bursts(rng, 200, [0])
    events.append(event(9999, NOON - 60, "six", NETWORKS[0], "pip", "1.0", ORGS[0]))
    store, _ = followed(tmp_path, events, [NOON])
    assert counted(store) == SETTLED
    for start in (date(2000, 1, 1), TODAY - timedelta(29)):
        store.live.clear()
        assert store.totals(start, TODAY) == per_package(store, start, TODAY)
        assert store.live == [(TODAY, TODAY)]  # not the days before the first event
    store.close()


def test_far_future_and_year_10000_events_are_stored_and_count_no_day_after_today(
        tmp_path: Path) -> None:
    rng = random.Random(6)
    events = bursts(rng, 200, [0])
    for number, stamp in ((90001, "2099-06-01T00:00:00.000Z"),
                          (90002, "10000-01-02T00:00:00.000Z")):  # clocks gone wrong
        bogus = event(number, NOON, "six", NETWORKS[1], "pip", "1.0", ORGS[0])
        bogus["time"] = stamp
        events.append(bogus)
    store, follower = followed(tmp_path, events, [NOON])
    assert store.query("SELECT count(*) FROM events") == [(len(events),)]
    assert counted(store) == SETTLED
    write(Path(store.path).parent / "events.jsonl",
          [event(90003, NOON + 60, "tool", NETWORKS[0], "curl", "1.0", ORGS[0])])
    assert drain(follower) == [False]  # a chunk of today: nothing to count
    assert store.query("SELECT count(*) FROM events") == [(len(events) + 1,)]
    store.close()


def test_a_straggler_after_midnight_recounts_nothing_until_its_day_settles(
        tmp_path: Path) -> None:
    rng = random.Random(7)
    now = [epoch(TODAY + timedelta(1)) + 1800]  # 00:30: TODAY ended, within the grace
    events = bursts(rng, 200, [0], day=TODAY) + bursts(rng, 200, [10000])
    events.append(event(20000, now[0] - 1200, "six", NETWORKS[0], "pip", "1.0", ORGS[0]))
    store, follower = followed(tmp_path, events, now)
    assert counted(store) == SETTLED
    straggler = event(20001, now[0] - 3600, "six", NETWORKS[2], "uv", "2.0", ORGS[0])
    write(Path(store.path).parent / "events.jsonl",
          [straggler, event(20002, now[0] - 60, "tool", NETWORKS[0], "curl", "1.0", ORGS[0])])
    assert drain(follower) == [False]
    assert counted(store) == SETTLED
    now[0] = epoch(TODAY + timedelta(1)) + 3600  # the grace is over: TODAY settles
    assert drain(follower) == [True, False]
    assert counted(store) == [*SETTLED, TODAY]
    store.close()


def test_a_store_of_an_earlier_release_opened_read_only_answers_totals(tmp_path: Path) -> None:
    store, _ = followed(tmp_path, bursts(random.Random(8), 100, [0]), [NOON])
    expected = per_package(store, FIRST, TODAY)
    store.query("DROP TABLE counted_days; DROP TABLE day_totals")
    store.close()
    earlier = DuckDBStore(str(tmp_path / "i.duckdb"), read_only=True)
    assert earlier.totals(FIRST, TODAY) == expected
    earlier.close()
