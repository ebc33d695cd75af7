"""What counts as a download, in SQL both engines run (design.md "What counts").

Both stores hold the events in one table with the columns of ``etc/clickhouse.sql``
(dotted names such as ``"origin.network"``). A *candidate* is a GET answered 2xx or 3xx,
not marked ``"complete": false``, of a docker manifest, a file-v1/v2 file, a python file
URL, an npm tarball (a version) or a go module zip, with a package (docker-v2: its
``auto_create_rule``).

Repeats collapse into one download: candidates of one package (and docker image) from one
origin network with one client runtime form a *session* while each follows the previous
one of the same version within :data:`WINDOW_SECONDS`; only a session's first request is a
download. Docker digests are special: a manifest fetched by digest (``sha256:...``) within
the window after any request of that image and client is the second half of a pull (the
platform manifest of a multi-arch index, ctr's ``HEAD tag`` + ``GET digest``) and joins it.
Times are compared in whole seconds (ClickHouse's ``DateTime``), ties are ordered tags
first, then by request id, so both engines find the same sessions.

The engines express "the previous request of the session" in their own SQL (DuckDB: window
functions; ClickHouse 18.16, which has none: sorted arrays per group) and share the rest:
:func:`starts_columns` gives both the same columns, and :func:`series_sql`,
:func:`companies_sql`, :func:`totals_sql` the same aggregations on top. Sessions never
reach back more than the window, so a day's downloads are found from the candidates of that
day and the window before it: :func:`day_totals_sql` counts them per day, package and
company, which the embedded store keeps for the days it has settled.
*Unique* downloads are distinct origin networks per package (and key) per day, summed over
the days of a period.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from scarfgw.insights.model import Breakdown, Interval

WINDOW_SECONDS: Final = 60
"""Requests of one package and version from one network and client within this many
seconds of the previous one are one download."""

CANDIDATE: Final = (
    "method = 'GET' AND status >= 200 AND status < 400 AND ifNull(complete, 1) = 1"
    " AND ((kind = 'docker' AND object = 'manifest') OR kind = 'file'"
    " OR (kind = 'python' AND file IS NOT NULL) OR (kind = 'npm' AND version IS NOT NULL)"
    " OR (kind = 'go' AND file = 'zip'))"
)
VERSION: Final = 'coalesce(version, "variables.version", reference)'
DIGEST: Final = "(kind = 'docker' AND reference LIKE '%:%')"
COMPANY: Final = (
    "CASE WHEN \"origin.org\" IS NOT NULL AND ifNull(\"origin.type\", '') NOT IN ('isp', 'hosting')"
    " THEN \"origin.org\" END"
)
SUBJECT: Final = "ifNull(image, '')"
NETWORK: Final = "ifNull(\"origin.network\", '')"
RUNTIME: Final = "ifNull(\"client.runtime\", '')"

ATTRIBUTES: Final = (
    ("version", VERSION),
    ("client", '"client.runtime"'),
    ("country", '"origin.country"'),
    ("company", COMPANY),
    ("domain", "domain"),
    ("type", '"origin.type"'),
    ("network", '"origin.network"'),
)
"""The columns of a download (besides ``pkg``, ``ts`` and ``day``), as expressions on the
events table; every :data:`~scarfgw.insights.model.Breakdown` is one of them."""


@dataclass(frozen=True)
class Dialect:
    """The few expressions the engines spell differently."""

    seconds: str
    """Epoch seconds (an integer) of the column ``time``."""
    millis: str
    """Epoch milliseconds (an integer) of the column ``time``."""
    day: str
    """The UTC date of the integer epoch seconds ``ts``."""
    periods: dict[Interval, str]
    """The first day of the period of the date ``day``."""
    quote: Callable[[str], str]
    """A string literal holding the text."""
    package: str = "coalesce(package, auto_create_rule)"
    """The package id of an event (docker-v2: its auto-creation rule id)."""


def candidates_sql(dialect: Dialect, where: str) -> str:
    """The candidates passing ``where`` (on the events table), with the session's columns
    (``pkg``, ``subject``, ``net``, ``rt``), ``ts`` (epoch seconds), ``vkey`` (the version;
    NULL for a docker digest), the ``digest`` flag, the request id and every attribute."""
    attributes = ", ".join(f"{expression} AS {name}" for name, expression in ATTRIBUTES)
    return (
        f"SELECT {dialect.package} AS pkg, {dialect.seconds} AS ts, {SUBJECT} AS subject,"
        f" {NETWORK} AS net, {RUNTIME} AS rt,"
        f" CASE WHEN {DIGEST} THEN NULL ELSE ifNull({VERSION}, '') END AS vkey,"
        f" CASE WHEN {DIGEST} THEN 1 ELSE 0 END AS digest, request_id, {attributes}"
        f" FROM events WHERE {CANDIDATE} AND {where}"
    )


def starts_columns() -> str:
    """The column list of a download relation."""
    return "pkg, ts, " + ", ".join(name for name, _ in ATTRIBUTES)


def series_sql(starts: str, dialect: Dialect, interval: Interval, by: Breakdown | None) -> str:
    """Downloads and unique networks per period and key, from the download relation
    ``starts`` (its ``company`` column is already the company)."""
    key = "NULL" if by is None else f"ifNull({by}, 'unknown')"
    period = dialect.periods[interval]
    return (
        f"SELECT {period.format(day='day')} AS period, key, sum(n) AS downloads,"
        f" sum(u) AS uniq FROM (SELECT {dialect.day.format(ts='ts')} AS day, {key} AS key,"
        f" count(*) AS n, count(DISTINCT network) AS u FROM ({starts}) AS s"
        f" GROUP BY day, key) AS d GROUP BY period, key ORDER BY period, key"
    )


def companies_sql(starts: str) -> str:
    """Companies with downloads, unique networks, first and last download (epoch seconds)."""
    return (
        f"SELECT company, count(*) AS downloads, count(DISTINCT network) AS uniq,"
        f" min(ts) AS first_seen, max(ts) AS last_seen FROM ({starts}) AS s"
        f" WHERE company IS NOT NULL GROUP BY company ORDER BY downloads DESC, company"
    )


def totals_sql(starts: str) -> str:
    """Downloads and distinct companies per package."""
    return (
        f"SELECT pkg, count(*) AS downloads, count(DISTINCT company) AS companies"
        f" FROM ({starts}) AS s GROUP BY pkg"
    )


def day_totals_sql(starts: str, dialect: Dialect) -> str:
    """Downloads per day, package and company (NULL: none) of the download relation
    ``starts``; :func:`totals_sql` of the same downloads is the sum of ``downloads`` and
    the distinct companies of these rows per package."""
    return (
        f"SELECT {dialect.day.format(ts='ts')} AS day, pkg, company, count(*) AS downloads"
        f" FROM ({starts}) AS s GROUP BY ALL"
    )


def summed_totals_sql(day_totals: str) -> str:
    """:func:`totals_sql` from rows of :func:`day_totals_sql` (``pkg``, ``company``,
    ``downloads``)."""
    return (
        f"SELECT pkg, sum(downloads) AS downloads, count(DISTINCT company) AS companies"
        f" FROM ({day_totals}) AS t GROUP BY pkg"
    )
