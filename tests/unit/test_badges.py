"""Badges: layout, options, compact counts, caching and the background-refreshed counts."""

from __future__ import annotations

import base64
import re
from datetime import date

import pytest
from twisted.internet.task import Clock

from scarfgw.insights.badge_counts import BadgeCounts
from scarfgw.insights.badge_options import BadgeOptionError, compact, icon_slug, parse_options
from scarfgw.insights.badge_svg import STYLES, BadgeSpec, render, text_width
from scarfgw.insights.badges import Badges
from scarfgw.insights.model import Package
from tests.insights_fakes import Download, MemoryReader

TODAY = date(2026, 12, 5)
NOON = 1796472000.0  # 2026-12-05T12:00:00Z


def badges() -> tuple[Badges, MemoryReader, Clock, BadgeCounts]:
    reader = MemoryReader(
        [Package("p1", "python", "hello", ("get.example.test",)),
         Package("quiet", "file", "nothing yet", ("get.example.test",))],
        [Download("p1", TODAY, company="Acme")] * 1234
        + [Download("p1", date(2025, 1, 1), company="Globex")])
    clock = Clock()
    clock.advance(NOON)
    counts = BadgeCounts(reader, clock, interval=60)
    counts.startService()
    return Badges(reader, counts), reader, clock, counts


def width_of(svg: str) -> int:
    match = re.search(r'<svg [^>]*width="(\d+)"', svg)
    assert match is not None
    return int(match.group(1))


@pytest.mark.parametrize(("count", "text"), [
    (0, "0"), (999, "999"), (1000, "1k"), (1234, "1.2k"), (9999, "10k"), (12345, "12k"),
    (999_499, "999k"), (999_999, "1M"), (3_400_000, "3.4M"), (7_000_000_000, "7G")])
def test_compact_counts(count, text):
    assert compact(count) == text


def test_widths_come_from_font_metrics():
    # proportional, not per character: "iiii" is far narrower than "MMMM"
    assert text_width("iiii") < text_width("MMMM") / 2


@pytest.mark.parametrize(("style", "label", "message", "shields"), [
    ("flat", "downloads", "1.2k", 104), ("flat", "companies", "37", 92),
    ("flat", "installs", "3.4M/month", 126), ("flat-square", "pulls", "999k/week", 106),
    ("plastic", "downloads", "0", 86), ("for-the-badge", "downloads", "1.2k", 156.25),
    ("for-the-badge", "companies", "37", 136.75), ("social", "downloads", "12k", 103),
    ("social", "installs", "3.4M/month", 125)])
def test_badges_are_as_wide_as_shields_io_badges(style, label, message, shields):
    # ``shields``: the width shields.io's own badge-maker 6.0.0 gives the same badge
    svg = render(BadgeSpec(label, message, "#007ec6", "#555", style=style))
    assert abs(width_of(svg) - shields) <= 3


def test_every_style_renders_accessible_svg():
    for style in STYLES:
        svg = render(BadgeSpec("downloads", "1.2k", "#007ec6", "#555", style=style))
        assert svg.startswith("<svg") and 'role="img"' in svg
        assert "<title>downloads: 1.2k</title>" in svg
    assert ">DOWNLOADS<" in render(BadgeSpec("downloads", "1.2k", "#4c1", "#555",
                                             style="for-the-badge"))


def test_html_in_a_label_is_escaped():
    svg = render(BadgeSpec('<a href="x">&', "1", "#4c1", "#555"))
    assert "<a href" not in svg and "&lt;a href=" in svg


def test_options_colours_logo_and_period():
    options = parse_options("style=flat-square&color=orange&label-color=ABC&logo=Node.js"
                            "&logoColor=white&period=month&label=pulls")
    assert options.style == "flat-square" and options.color == "#fe7d37"
    assert options.label_color == "#abc" and options.period == "month"
    assert options.label == "pulls"
    assert options.logo is not None
    svg = base64.b64decode(options.logo.split(",", 1)[1]).decode()
    assert svg.startswith('<svg fill="#fff"') and "<path" in svg
    assert icon_slug("Node.js") == "nodedotjs"


@pytest.mark.parametrize(("query", "reason"), [
    ("style=neon", "style"), ("color=notacolour", "color"), ("logo=no-such-brand-xyz", "logo"),
    ("period=decade", "period"), ("label=" + "x" * 200, "label"),
    ("logo=data:text/html;base64,PGI+", "logo"), ("a=" + "b" * 5000, "query"),
    ("label=%ff%fe", "unreadable")])
def test_absurd_options_are_refused_with_a_reason(query, reason):
    with pytest.raises(BadgeOptionError, match=reason):
        parse_options(query)


def test_unknown_parameters_are_ignored():
    assert parse_options("v=2&cacheSeconds=60").style == "flat"


def test_badge_answers_cache_headers_etag_and_304():
    answers, _, _, _ = badges()
    first = answers.answer(b"badge", [b"downloads", b"p1.svg"], "", None)
    assert first.status == 200
    headers = dict(first.headers)
    assert headers[b"Cache-Control"] == b"public, max-age=300"
    assert headers[b"Content-Type"].startswith(b"image/svg+xml")
    assert b">1.2k<" in first.body
    again = answers.answer(b"badge", [b"downloads", b"p1.svg"], "", headers[b"ETag"])
    assert again.status == 304 and again.body == b""
    scarf = answers.answer(b"package", [b"installs-badge", b"p1"], "", None)
    assert scarf.body == first.body


def test_company_badge_periods_and_packages_without_data():
    answers, _, _, _ = badges()
    month = answers.answer(b"badge", [b"companies", b"p1.svg"], "period=month", None)
    assert b">1/month<" in month.body
    total = answers.answer(b"package", [b"company-badge", b"p1"], "", None)
    assert b">2<" in total.body
    quiet = answers.answer(b"badge", [b"downloads", b"quiet.svg"], "", None)
    assert quiet.status == 200 and b">0<" in quiet.body


def test_unknown_package_and_bad_parameter():
    answers, _, _, _ = badges()
    assert answers.answer(b"badge", [b"downloads", b"nope.svg"], "", None).status == 404
    assert answers.answer(b"badge", [b"stars", b"p1.svg"], "", None).status == 404
    bad = answers.answer(b"badge", [b"downloads", b"p1.svg"], "style=neon", None)
    assert bad.status == 400 and b"style" in bad.body


def test_views_never_query_the_engine_and_counts_refresh_in_the_background():
    answers, reader, clock, counts = badges()
    after_start = reader.queries
    assert after_start == 6  # 3 periods x (totals, companies)
    for _ in range(100):
        answers.answer(b"badge", [b"downloads", b"p1.svg"], "", None)
    assert reader.queries == after_start
    reader.downloads_.extend([Download("p1", TODAY)] * 100)
    clock.advance(60)
    assert reader.queries == 2 * after_start
    assert counts.count("downloads", "total", "p1") == 1335
    reader.fail = True
    clock.advance(60)
    assert counts.count("downloads", "total", "p1") == 1335  # a failed refresh keeps the numbers
    counts.stopService()
