"""``scarfgw stats``: the API's numbers as a table on the terminal.

The engine is opened directly (DuckDB read-only). DuckDB lets one process hold a file
while it writes, so while the gateway runs the store is locked: then, with a token in
``SCARFGW_TOKEN``, the numbers come from the running instance's API on ``listen.insights``
(the same queries); without one the command says so and exits 1.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import duckdb

from scarfgw.config import Config, ConfigError, load_config
from scarfgw.insights.catalogue import catalogue
from scarfgw.insights.model import Breakdown, Package
from scarfgw.insights.service import open_engine

_SINCE = re.compile(r"([1-9][0-9]{0,3})([dwmy])")
_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}

Series = Callable[[str, date, date, Breakdown | None], list[tuple[str | None, int, int]]]
"""(key, downloads, unique) of one package over a range."""


def _engine_series(config: Config) -> Series:
    engine = open_engine(config, read_only=True)

    def series(package_id: str, start: date, end: date,
               by: Breakdown | None) -> list[tuple[str | None, int, int]]:
        return [(p.key, p.downloads, p.unique)
                for p in engine.downloads(package_id, start, end, "day", by)]

    return series


def _api_series(config: Config, token: str) -> Series:
    spec = config.listen.insights or ""
    port = re.search(r"tcp6?:(\d+)", spec)
    interface = re.search(r"interface=([^:]+)", spec)
    if port is None:
        raise ConfigError(config.source, "listen.insights", "no tcp port to ask the API on")
    base = f"http://{interface.group(1) if interface else '127.0.0.1'}:{port.group(1)}"

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


def stats(path: str, package_id: str | None, by: Breakdown | None, since: str) -> int:
    """Print downloads and unique networks per package (and key) since ``since`` ago."""
    match = _SINCE.fullmatch(since)
    if match is None:
        print(f"error: --since: expected a number and d, w, m or y (30d), got {since!r}",
              file=sys.stderr)
        return 1
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    packages: list[Package] = list(catalogue(config.rules))
    if package_id is not None:
        packages = [p for p in packages if p.id == package_id]
        if not packages:
            print(f"error: {path}: no rule has the package id {package_id!r}", file=sys.stderr)
            return 1
    end = datetime.now(UTC).date()
    start = end - timedelta(days=int(match.group(1)) * _DAYS[match.group(2)] - 1)
    try:
        series = _engine_series(config)
    except duckdb.Error as exc:
        token = os.environ.get("SCARFGW_TOKEN")
        if not token:
            print(f"error: cannot open {config.insights.duckdb_path} ({exc}); while the "
                  "gateway runs, set SCARFGW_TOKEN to an insights token to ask its API",
                  file=sys.stderr)
            return 1
        series = _api_series(config, token)
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
