"""Insights benchmark: JSONL ingest rate, query latency at size, and the gateway's docker 307
throughput with insights on vs off.

Usage: ``python bench/insights.py [--events N] [--packages 200] [--days 90] [--queries 40]
[--rounds 3] [--duration 10] [--threads 1] [--catch-up-threads N] [--memory-limit 1GB]
[--run-events N] [--skip-throughput] [--keep DIR] [--cache DIR]``.

1. Writes ``--events`` gateway-shaped events (docker, python and file kinds over
   ``--packages`` packages and ``--days`` days, about 440 bytes each) to a JSONL file (with
   ``--cache DIR``, once: a later run with the same figures reuses it).
2. Ingests the file into a fresh DuckDB store exactly as the primary does (the follower,
   its chunks, idempotent inserts, the configured threads and memory limit), then sorts
   the recent events into runs and counts the settled days' totals as the primary does
   once it has caught up, and closes the store (its checkpoint): events durable and
   queryable per second (sorting and counting not included), with the CPU seconds the
   process used, and the seconds of sorting and counting apart.
3. Runs ``--queries`` 30-day daily downloads-by-version series for random packages (the
   session and digest rules included): p50/p95 in ms. Also the companies of a package and
   the all-package totals behind ``/api/v1/packages`` over the 30 days and since
   2000-01-01 (a badge's total), p50 of five each.
4. Unless ``--skip-throughput``: ``twistd scarfgw`` (one process, core 1) with insights off
   and on, interleaved ``--rounds`` times, wrk on core 0 against the docker 307 row; with
   insights on the primary ingests the events the load writes, as it would in production.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    REPO,
    lua_script,
    make_rows,
    median_sample,
    request_headers,
    run_wrk,
    start_gateway,
    stop_children,
    wrk_url,
)

sys.path.insert(0, str(REPO))

from scarfgw.insights.badge_counts import FIRST_DAY
from scarfgw.insights.embedded import RUN_EVENTS, DuckDBStore
from scarfgw.insights.follow import Follower

END = date(2026, 11, 30)
NOON = (END - date(1970, 1, 1)).days * 86400 + 43200
"""The stores' clock: noon of the newest day (the days before it are settled)."""
RUNTIMES = ("docker", "containerd", "podman", "pip", "uv", "curl", "npm")
COUNTRIES = ("DE", "US", "FR", "JP", "BR", "IN", None)
ORGS = (("Example Corp", "business"), ("Big Cable", "isp"), ("Cloudy", "hosting"),
        ("Uni", "education"), (None, None))


def write_events(path: Path, count: int, packages: int, days: int, seed: int = 7) -> None:
    """``count`` events in time order, a few templates filled with random values."""
    rng = random.Random(seed)
    start = END - timedelta(days=days - 1)
    span = days * 86400
    step = span / count
    base = int(time.mktime(start.timetuple())) - time.timezone
    lines = []
    with path.open("w") as out:
        for number in range(count):
            moment = base + number * step
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
            package = rng.randrange(packages)
            network = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"
            org, kind = ORGS[rng.randrange(len(ORGS))]
            country = COUNTRIES[rng.randrange(len(COUNTRIES))]
            runtime = RUNTIMES[rng.randrange(len(RUNTIMES))]
            version = f"1.{rng.randrange(12)}.0"
            origin = (f'{{"network":"{network}","country":'
                      + (f'"{country}"' if country else "null") + ',"org":'
                      + (f'"{org}","type":"{kind}"}}' if org else 'null,"type":null}'))
            common = (f'{{"time":"{stamp}.{number % 1000:03d}Z","request_id":"{number:032x}",'
                      f'"domain":"d{package % 20}.example.test","method":"GET",')
            tail = (f'"user_agent":"{runtime}/1.0","referer":null,"origin":{origin},'
                    f'"client":{{"runtime":"{runtime}","version":"1.0"}},')
            if package % 3 == 0:
                lines.append(
                    f'{common}"path":"/v2/p{package}/img/manifests/{version}","status":307,'
                    f'{tail}"kind":"docker","package":"p{package}","image":"p{package}/img",'
                    f'"reference":"{version}","backend":"ghcr.io","auto_create_rule":null,'
                    f'"object":"manifest","pull":true}}\n')
            elif package % 3 == 1:
                lines.append(
                    f'{common}"path":"/simple/p{package}/p-{version}.whl","status":307,'
                    f'{tail}"kind":"python","package":"p{package}","version":"{version}",'
                    f'"file":"p-{version}.whl","target":"https://files.example.test/'
                    f'p-{version}.whl"}}\n')
            else:
                lines.append(
                    f'{common}"path":"/download/p{package}-{version}.tar.gz","status":307,'
                    f'{tail}"kind":"file","package":"p{package}","variables":{{"name":'
                    f'"p{package}","version":"{version}"}},"target":"https://github.com/x/'
                    f'p-{version}.tar.gz"}}\n')
            if len(lines) == 10000:
                out.writelines(lines)
                lines.clear()
        out.writelines(lines)


class TimedStore(DuckDBStore):
    """The store, keeping the wall and CPU seconds its sorting into runs and its counting
    of day totals took."""

    sorting = 0.0
    sorting_cpu = 0.0

    def _timed(self, work: Callable[[], int]) -> int:
        began, cpu = time.perf_counter(), time.process_time()
        try:
            return work()
        finally:
            self.sorting += time.perf_counter() - began
            self.sorting_cpu += time.process_time() - cpu

    def sort_recent(self) -> int:
        """Sort as the store does, timed."""
        return self._timed(super().sort_recent)

    def count_days(self) -> int:
        """Count day totals as the store does, timed."""
        return self._timed(super().count_days)


def ingest(path: Path, store_path: Path, threads: int, catch_up_threads: int | None,
           memory_limit: str, run_events: int) -> dict[str, float]:
    """Ingest ``path`` into a new store, sort it into runs and close it: seconds (wall and
    CPU of this process) in all, of which sorting and closing, and the events stored."""
    began, cpu = time.perf_counter(), time.process_time()
    store = TimedStore(str(store_path), threads=threads, catch_up_threads=catch_up_threads,
                       memory_limit=memory_limit, run_events=run_events, clock=lambda: NOON)
    follower = Follower(store, [str(path)])
    added = 0
    while True:
        result = follower.step()
        added += result.added
        if not result.more:
            break
    closing = time.perf_counter()
    follower.close()
    store.close()
    ended = time.perf_counter()
    return {"seconds": ended - began, "cpu": time.process_time() - cpu,
            "sorting": store.sorting, "sorting_cpu": store.sorting_cpu,
            "close": ended - closing, "added": added}


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def queries(store_path: Path, packages: int, count: int, threads: int) -> dict[str, float]:
    """Latencies in ms: series p50/p95, one companies query, the totals query (p50 of 5)."""
    store = DuckDBStore(str(store_path), read_only=True, threads=threads, clock=lambda: NOON)
    rng = random.Random(3)
    start = END - timedelta(days=29)
    store.downloads("p0", start, END, "day", "version")  # warm the file cache
    series = []
    for _ in range(count):
        began = time.perf_counter()
        points = store.downloads(f"p{rng.randrange(packages)}", start, END, "day", "version")
        series.append((time.perf_counter() - began) * 1000)
        assert points, "no downloads: the generated events do not match the query"
    began = time.perf_counter()
    store.companies("p1", start, END)
    companies = (time.perf_counter() - began) * 1000
    totals: dict[date, list[float]] = {start: [], FIRST_DAY: []}
    for _ in range(5):
        for first, taken in totals.items():
            began = time.perf_counter()
            store.totals(first, END)
            taken.append((time.perf_counter() - began) * 1000)
    store.close()
    return {"p50": statistics.median(series), "p95": percentile(series, 0.95),
            "companies": companies, "totals": statistics.median(totals[start]),
            "badge_total": statistics.median(totals[FIRST_DAY])}


def throughput(tmp: Path, rounds: int, duration: float, python: str) -> dict[str, list[float]]:
    """Docker 307 req/s with insights off and on, interleaved."""
    results: dict[str, list[float]] = {"off": [], "on": []}
    row = make_rows(1)[0]
    for index in range(rounds):
        for mode in ("off", "on"):
            server = start_gateway(tmp, f"gw-{mode}-{index}", 1, python, REPO,
                                   insights=mode == "on")
            try:
                script = lua_script(tmp / f"{mode}-{index}.lua", row,
                                    request_headers(row, server))
                results[mode].append(median_sample(
                    [run_wrk(wrk_url(row, server), script, duration)]).rps)
            finally:
                stop_children()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="DuckDB threads (insights.duckdb.threads; default 1)")
    parser.add_argument("--catch-up-threads", type=int,
                        help="DuckDB threads for a backlog (default: one per core)")
    parser.add_argument("--memory-limit", default="1GB",
                        help="DuckDB memory (insights.duckdb.memory_limit; default 1GB)")
    parser.add_argument("--run-events", type=int, default=RUN_EVENTS,
                        help="events of a sorted run (a figure larger than --events leaves "
                        "them unsorted, to measure the queries before sorting)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--keep", type=Path, help="work in DIR and keep the files")
    parser.add_argument("--cache", type=Path, help="keep the generated events in DIR")
    args = parser.parse_args(argv)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="scarfgw-bench-insights-"))
    tmp.mkdir(parents=True, exist_ok=True)
    name = f"events-{args.events}-{args.packages}-{args.days}.jsonl"
    events = (args.cache or tmp) / name
    if not events.exists():
        began = time.perf_counter()
        events.parent.mkdir(parents=True, exist_ok=True)
        write_events(events.with_suffix(".part"), args.events, args.packages, args.days)
        events.with_suffix(".part").rename(events)
        print(f"generated {args.events:,} events in {time.perf_counter() - began:.1f} s")
    size = events.stat().st_size
    store = tmp / "insights.duckdb"
    taken = ingest(events, store, args.threads, args.catch_up_threads, args.memory_limit,
                   args.run_events)
    added = taken["added"]
    seconds, cpu = taken["seconds"] - taken["sorting"], taken["cpu"] - taken["sorting_cpu"]
    print(f"ingest: {added:,} events ({size / 2**30:.2f} GiB) durable and queryable in "
          f"{seconds:.1f} s, closing (checkpoint) {taken['close']:.1f} s of it, = "
          f"{added / seconds:,.0f} events/s ({size / seconds / 2**20:.0f} MiB/s; {cpu:.1f} "
          f"CPU s, {cpu / added * 1e6:.2f} us an event); then sorted into runs and day "
          f"totals counted in "
          f"{taken['sorting']:.1f} s ({taken['sorting_cpu']:.1f} CPU s); store "
          f"{store.stat().st_size / 2**20:.0f} MiB; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    latency = queries(store, args.packages, args.queries, args.threads)
    print(f"30-day daily downloads by version, {args.queries} random packages: "
          f"p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms; companies of a "
          f"package {latency['companies']:.1f} ms; totals of all packages (p50 of 5) "
          f"{latency['totals']:.1f} ms, since {FIRST_DAY} (a badge's total) "
          f"{latency['badge_total']:.1f} ms")
    if not args.keep:
        if not args.cache:
            events.unlink()
        store.unlink()
    if not args.skip_throughput:
        results = throughput(tmp, args.rounds, args.duration, args.python)
        off, on = (statistics.median(results[mode]) for mode in ("off", "on"))
        runs = {mode: "/".join(f"{rps / 1000:.1f}k" for rps in values)
                for mode, values in results.items()}
        print(f"docker 307 req/s: insights off {off:,.0f} ({runs['off']}), "
              f"on {on:,.0f} ({runs['on']}): {100 * (on / off - 1):+.1f} %")
    if not args.keep:
        for leftover in sorted(tmp.rglob("*"), reverse=True):
            leftover.unlink() if leftover.is_file() or leftover.is_symlink() else leftover.rmdir()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
