"""``scarfgw stats``: the API's numbers as a table on the terminal.

The engine is opened directly (DuckDB read-only). DuckDB lets one process hold a file
while it writes, so while the gateway runs the store is locked: then, with a token in
``SCARFGW_TOKEN``, the numbers come from the running instance's API on ``listen.insights``
(the same queries); without one the command says so and exits 1. The ``scarfgw`` command
(:mod:`scarfgw.cli`) loads the config and hands its sections to :func:`stats`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import date, timedelta

import duckdb

from scarfgw.http.endpoints import listener_url
from scarfgw.insights.catalogue import catalogue
from scarfgw.insights.model import Breakdown, Package
from scarfgw.insights.service import open_engine
from scarfgw.insights.settings import InsightsConfig
from scarfgw.rules.base import Rule

_SINCE = re.compile(r"([1-9][0-9]{0,3})([dwmy])")
_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}

Series = Callable[[str, date, date, Breakdown | None], list[tuple[str | None, int, int]]]
"""(key, downloads, unique) of one package over a range."""


def _engine_series(settings: InsightsConfig) -> Series:
    engine = open_engine(settings, time.time, read_only=True)  # the CLI: no reactor

    def series(package_id: str, start: date, end: date,
               by: Breakdown | None) -> list[tuple[str | None, int, int]]:
        return [(p.key, p.downloads, p.unique)
                for p in engine.downloads(package_id, start, end, "day", by)]

    return series


def _api_series(base: str, token: str) -> Series:
    def series(package_id: str, start: date, end: date,
               by: Breakdown | None) -> list[tuple[str | None, int, int]]:
        query = {"from": start.isoformat(), "to": end.isoformat(), **({"by": by} if by else {})}
        url = (f"{base}/api/v1/packages/{urllib.parse.quote(package_id, safe='')}/downloads?"
               + urllib.parse.urlencode(query))
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            document = json.load(response)
        return [(p["key"], p["downloads"], p["unique"]) for p in document["series"]]

    return series


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
                     .rstrip() for row in rows)


def period(since: str, today: date) -> tuple[date, date]:
    """The first and last day of the ``since`` period (``30d``, ``12w``, ``6m``, ``1y``)
    that ends ``today``; ValueError saying what is expected."""
    match = _SINCE.fullmatch(since)
    if match is None:
        raise ValueError(f"expected a number and d, w, m or y (30d), got {since!r}")
    return today - timedelta(days=int(match.group(1)) * _DAYS[match.group(2)] - 1), today


def stats(source: str, rules: Sequence[Rule], settings: InsightsConfig, listener: str | None,
          package_id: str | None, by: Breakdown | None, start: date, end: date) -> int:
    """Print downloads and unique networks per package (and key) from ``start`` to ``end``,
    for the packages of ``rules`` (or ``package_id`` only), read from the engine of
    ``settings`` or else from the API on ``listener``; ``source`` is the config file."""
    packages: list[Package] = list(catalogue(rules))
    if package_id is not None:
        packages = [p for p in packages if p.id == package_id]
        if not packages:
            print(f"error: {source}: no rule has the package id {package_id!r}",
                  file=sys.stderr)
            return 1
    try:
        series = _engine_series(settings)
    except duckdb.Error as exc:
        token = os.environ.get("SCARFGW_TOKEN")
        if not token:
            print(f"error: cannot open {settings.duckdb_path} ({exc}); while the "
                  "gateway runs, set SCARFGW_TOKEN to an insights token to ask its API",
                  file=sys.stderr)
            return 1
        base = listener_url(listener) if listener else None
        if base is None:
            print(f"error: {source}: listen.insights: no tcp port to ask the API on",
                  file=sys.stderr)
            return 1
        series = _api_series(base, token)
    rows: list[tuple[str, ...]] = [("package", by or "", "downloads", "unique")]
    try:
        for package in packages:
            totals: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
            for key, downloads, unique in series(package.id, start, end, by):
                totals[key][0] += downloads
                totals[key][1] += unique
            for key, (downloads, unique) in sorted(totals.items(), key=lambda i: -i[1][0]):
                rows.append((package.id, key or "", str(downloads), str(unique)))
            if not totals:
                rows.append((package.id, "", "0", "0"))
    except (OSError, urllib.error.URLError, duckdb.Error) as exc:
        print(f"error: insights query failed: {exc}", file=sys.stderr)
        return 1
    print(f"downloads {start} .. {end} (unique: networks per day, summed)")
    print(_table([row if by else (row[0], *row[2:]) for row in rows]))
    return 0
