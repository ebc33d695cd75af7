"""The maintainers' dashboard: sign in with a token, the packages it may read, and per
package the downloads over a range with breakdowns, top companies and CSV export.

Server-rendered HTML (Jinja2, autoescaped) with inline SVG charts and one stylesheet served
from here: every flow works without JavaScript and without the internet.

- ``GET /``: the sign-in form, or the packages with 30-day totals and a sparkline.
- ``POST /session``: sign in (``token`` form field); ``POST /session/end``: sign out.
- ``GET /packages/{id}?from=&to=&interval=``: one package.
- ``GET /packages/{id}/export.csv?from=&to=&interval=&table=``: a table of that page as CSV.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.static import Data

from scarfgw.insights.badge_options import compact
from scarfgw.insights.charts import bar_chart, sparkline
from scarfgw.insights.model import Breakdown, CompanyRow, Grant, Package, Reader, SeriesPoint
from scarfgw.insights.session import COOKIE, Sessions
from scarfgw.insights.view_range import PRESETS, RangeError, ViewRange, parse_range, periods

log: Final = Logger()

TABLES: Final[tuple[Breakdown, ...]] = ("version", "client", "country", "domain")
"""The breakdowns shown as tables; companies have their own, richer table."""
_TABLE_TITLES: Final = {"version": "Versions", "client": "Clients", "country": "Countries",
                        "domain": "Domains"}
_TOP_ROWS: Final = 10
_MAX_FORM: Final = 4096
_HTML: Final = b"text/html; charset=utf-8"
_SECURITY_HEADERS: Final = (
    (b"Content-Security-Policy", b"default-src 'none'; style-src 'self' 'unsafe-inline';"
                                 b" img-src 'self' data:; form-action 'self';"
                                 b" frame-ancestors 'none'; base-uri 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
)


def templates() -> Environment:
    """The dashboard's templates, HTML-escaping every value they show."""
    env = Environment(loader=PackageLoader("scarfgw.insights", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["compact"] = compact
    env.filters["thousands"] = lambda number: f"{number:,}"
    return env


def _query(request: Request) -> dict[str, str]:
    raw = request.uri.partition(b"?")[2].decode("latin-1")[:_MAX_FORM]
    try:
        return dict(parse_qsl(raw, max_num_fields=16))
    except ValueError:
        return {}


def _secure(request: Request) -> bool:
    """HTTPS to this site, directly or (from the gateway on this machine) as forwarded."""
    if request.isSecure():
        return True
    peer = getattr(request.getClientAddress(), "host", "")
    forwarded = request.getHeader(b"x-forwarded-proto")
    return peer in ("127.0.0.1", "::1") and forwarded == b"https"


class Dashboard:
    """Renders the dashboard's pages for signed-in grants."""

    def __init__(self, reader: Reader, sessions: Sessions, clock: Any) -> None:
        self.reader = reader
        self.sessions = sessions
        self.clock = clock
        self.env = templates()

    def today(self) -> date:
        """Today in UTC, by the injected clock."""
        return datetime.fromtimestamp(self.clock.seconds(), UTC).date()

    def grant(self, request: Request) -> Grant | None:
        """The signed-in grant of ``request``, if any."""
        return self.sessions.grant(request.getCookie(COOKIE))

    def page(self, request: Request, status: int, template: str, **values: Any) -> bytes:
        """``template`` rendered as the whole answer."""
        values["status"] = status
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", _HTML)
        for name, value in _SECURITY_HEADERS:
            request.setHeader(name, value)
        return self.env.get_template(template).render(**values).encode("utf-8")

    def error(self, request: Request, status: int, message: str, signed_in: bool = True
              ) -> bytes:
        """A plain page that says what went wrong and links back."""
        return self.page(request, status, "error.html", message=message,
                         signed_in=signed_in)

    def readable(self, grant: Grant) -> list[Package]:
        """The packages ``grant`` may read, by label."""
        return sorted((p for p in self.reader.packages() if grant.may_read(p.id)),
                      key=lambda p: (p.label.lower(), p.id))

    def package_for(self, request: Request, grant: Grant, package_id: str
                    ) -> Package | bytes:
        """The package, or the error page for an unknown one or one ``grant`` may not read."""
        for package in self.reader.packages():
            if package.id == package_id:
                if grant.may_read(package_id):
                    return package
                return self.error(request, 403, "This token may not read that package.")
        return self.error(request, 404, "There is no such package.")

    def answer_later(self, request: Request, work: Callable[[], defer.Deferred[bytes]]
                     ) -> int:
        """Finish ``request`` with what ``work`` produces; an engine failure is a 503."""

        def failed(failure: Any) -> bytes:
            log.failure("an insights page failed", failure)
            return self.error(request, 503, "The insights store did not answer; try again "
                                            "in a moment.")

        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def done(body: bytes) -> None:
            if not gone:
                request.write(body)
                request.finish()

        defer.maybeDeferred(work).addErrback(failed).addCallback(done)
        return NOT_DONE_YET

    @defer.inlineCallbacks
    def overview(self, request: Request, grant: Grant) -> Any:
        """The packages ``grant`` may read, with 30-day totals and daily sparklines (the
        totals are the sparklines' sums, so the two always agree)."""
        today = self.today()
        start = today - timedelta(days=29)
        packages = self.readable(grant)
        series = yield defer.gatherResults(
            [self.reader.downloads(p.id, start, today, "day", None) for p in packages],
            consumeErrors=True)
        days = periods(ViewRange(start, today, "day"))
        rows = []
        for package, points in zip(packages, series, strict=True):
            by_day = {point.period: point.downloads for point in points}
            counts = [by_day.get(day, 0) for day in days]
            rows.append({"package": package, "total": sum(counts),
                         "spark": sparkline(counts), "last_week": sum(counts[-7:]),
                         "week_before": sum(counts[-14:-7])})
        return self.page(request, 200, "packages.html", grant=grant, rows=rows,
                         signed_in=True, start=start, end=today)

    @defer.inlineCallbacks
    def package_data(self, package: Package, view: ViewRange) -> Any:
        """The series, the breakdowns and the companies of ``package`` in ``view``."""
        reader = self.reader
        results = yield defer.gatherResults(
            [reader.downloads(package.id, view.start, view.end, view.interval, None)]
            + [reader.downloads(package.id, view.start, view.end, view.interval, by)
               for by in TABLES]
            + [reader.companies(package.id, view.start, view.end)],
            consumeErrors=True)
        series: list[SeriesPoint] = results[0]
        by_period = {point.period: point for point in series}
        totals = [(day, by_period[day].downloads if day in by_period else 0,
                   by_period[day].unique if day in by_period else 0) for day in periods(view)]
        tables = {by: _ranked(points) for by, points in zip(TABLES, results[1:-1], strict=True)}
        companies: list[CompanyRow] = results[-1]
        return totals, tables, companies

    @defer.inlineCallbacks
    def package_page(self, request: Request, package: Package, view: ViewRange) -> Any:
        """One package's page."""
        totals, tables, companies = yield self.package_data(package, view)
        downloads = sum(count for _, count, _ in totals)
        unique = sum(count for _, _, count in totals)
        chart = bar_chart([(day, count) for day, count, _ in totals], view.interval)
        return self.page(
            request, 200, "package.html", package=package, view=view, signed_in=True,
            downloads=downloads, unique=unique, chart=chart, totals=totals,
            tables=[(by, _TABLE_TITLES[by], rows[:_TOP_ROWS], len(rows), downloads)
                    for by, rows in tables.items()],
            companies=companies[:_TOP_ROWS], company_count=len(companies),
            presets=[(days, ViewRange(self.today() - timedelta(days=days - 1), self.today(),
                                      view.interval)) for days in PRESETS],
            today=self.today())

    @defer.inlineCallbacks
    def export(self, request: Request, package: Package, view: ViewRange, table: str) -> Any:
        """``table`` of the package page as CSV."""
        totals, tables, companies = yield self.package_data(package, view)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        if table == "series":
            writer.writerow(["period", "downloads", "unique"])
            writer.writerows((day.isoformat(), count, unique) for day, count, unique in totals)
        elif table == "companies":
            writer.writerow(["company", "downloads", "unique", "first_seen", "last_seen"])
            writer.writerows((_cell(row.company), row.downloads, row.unique,
                              row.first_seen.isoformat(), row.last_seen.isoformat())
                             for row in companies)
        else:
            writer.writerow([table, "downloads", "unique"])
            writer.writerows((_cell(key), count, unique) for key, count, unique in tables[table])
        name = f"{package.id}-{table}-{view.start}-{view.end}.csv"
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition",
                          f'attachment; filename="{_filename(name)}"'.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return out.getvalue().encode("utf-8")


def _ranked(points: Sequence[SeriesPoint]) -> list[tuple[str, int, int]]:
    """A breakdown's keys with downloads and unique summed over the range, most first."""
    downloads: dict[str, int] = defaultdict(int)
    unique: dict[str, int] = defaultdict(int)
    for point in points:
        key = point.key if point.key is not None else "unknown"
        downloads[key] += point.downloads
        unique[key] += point.unique
    return sorted(((key, downloads[key], unique[key]) for key in downloads),
                  key=lambda row: (-row[1], row[0]))


def _cell(value: str) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _filename(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-._") else "_" for c in name)


class _Pages(Resource):
    """A leaf of the dashboard: it answers every path below it."""

    isLeaf = True

    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__()
        self.dashboard = dashboard


class IndexPage(_Pages):
    """``/``: the sign-in form or the packages."""

    def render_GET(self, request: Request) -> bytes | int:
        """The page for the session in the request's cookie."""
        if request.postpath not in (None, [], [b""]):
            return self.dashboard.error(request, 404, "There is no such page.", signed_in=False)
        grant = self.dashboard.grant(request)
        if grant is None:
            return self.dashboard.page(request, 200, "signin.html", signed_in=False)
        return self.dashboard.answer_later(
            request, lambda: self.dashboard.overview(request, grant))


class SessionPage(_Pages):
    """``POST /session`` signs in, ``POST /session/end`` signs out."""

    def render_POST(self, request: Request) -> bytes:
        """Sign in or out, then back to ``/``."""
        sessions = self.dashboard.sessions
        secure = _secure(request)
        if request.postpath == [b"end"]:
            request.setHeader(b"Set-Cookie", sessions.cookie_header(b"", secure))
            return self._home(request)
        if request.postpath not in (None, [], [b""]):
            return self.dashboard.error(request, 404, "There is no such page.", signed_in=False)
        body = request.content.read(_MAX_FORM + 1) if request.content is not None else b""
        try:
            form = dict(parse_qsl(body.decode("utf-8"), max_num_fields=8))
        except (UnicodeDecodeError, ValueError):
            form = {}
        token = form.get("token", "").strip()
        if len(body) > _MAX_FORM or self.dashboard.sessions.authenticate(token) is None:
            return self.dashboard.page(request, 401, "signin.html", signed_in=False,
                                       failed=True)
        request.setHeader(b"Set-Cookie", sessions.cookie_header(sessions.seal(token), secure))
        return self._home(request)

    def _home(self, request: Request) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"Location", b"/")
        request.setHeader(b"Cache-Control", b"no-store")
        return b""

    def render_GET(self, request: Request) -> bytes:
        """Signing in and out are forms; a plain visit goes home."""
        return self._home(request)


class PackagePages(_Pages):
    """``/packages/{id}`` and ``/packages/{id}/export.csv``."""

    def render_GET(self, request: Request) -> bytes | int:
        """A package page or one of its tables as CSV, for a signed-in grant."""
        dashboard = self.dashboard
        grant = dashboard.grant(request)
        if grant is None:
            request.setResponseCode(303)
            request.setHeader(b"Location", b"/")
            return b""
        path = request.postpath or []
        if not 1 <= len(path) <= 2 or (len(path) == 2 and path[1] not in (b"", b"export.csv")):
            return dashboard.error(request, 404, "There is no such page.")
        package = dashboard.package_for(request, grant, path[0].decode("utf-8", "replace"))
        if isinstance(package, bytes):
            return package
        query = _query(request)
        try:
            view = parse_range(query, dashboard.today())
        except RangeError as exc:
            return dashboard.error(request, 400, f"Cannot show that range: {exc}.")
        if len(path) == 2 and path[1] == b"export.csv":
            table = query.get("table", "series")
            if table not in ("series", "companies", *TABLES):
                return dashboard.error(request, 400, "table: one of series, companies, "
                                                     + ", ".join(TABLES) + ".")
            return dashboard.answer_later(
                request, lambda: dashboard.export(request, package, view, table))
        return dashboard.answer_later(
            request, lambda: dashboard.package_page(request, package, view))


def asset(name: str, content_type: str) -> Data:
    """``name`` from the package's templates folder (the stylesheet, the icon), served as is."""
    env = templates()
    assert env.loader is not None
    return Data(env.loader.get_source(env, name)[0].encode("utf-8"), content_type)


def install(root: Resource, dashboard: Dashboard) -> None:
    """Mount the dashboard's pages on the insights site's ``root``."""
    root.putChild(b"", IndexPage(dashboard))
    root.putChild(b"session", SessionPage(dashboard))
    root.putChild(b"packages", PackagePages(dashboard))
    static = Resource()
    static.putChild(b"app.css", asset("app.css", "text/css; charset=utf-8"))
    icon = asset("icon.svg", "image/svg+xml")
    static.putChild(b"icon.svg", icon)
    root.putChild(b"static", static)
    root.putChild(b"favicon.ico", icon)
