"""The dashboard and badges in a real headless Chromium (Debian's chromium + chromedriver):
sign in, a wrong token, the package list, a package page and its chart, a range change, CSV
export, sign out; no console errors; screenshots at 1280 and 375 px wide.

The data is a real gateway's: requests from many client networks (GeoIP databases written
with mmdb-writer give countries and companies, one with HTML in its name) go through its
HTTP listener, its JSONL events are followed into DuckDB by the primary, and the insights
listener serves the pages. To show history, those real events are also copied into the
JSONL file on earlier days (time and request id changed), as the gateway would have
written them then.

Screenshots go to ``$SCARFGW_ARTIFACTS`` (default ``var/artifacts``, ignored by git).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from scarfgw.insights.badge_options import compact
from scarfgw.insights.tokens import token_hash
from scarfgw.insights.ui import InsightsUI
from tests.integration.test_insights_api import RULES, _run_gateway
from tests.support import deferLater, http_get, jsonl_events, raw_request

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "sgi_browser-test-token"
OTHER_TOKEN = "sgi_other-package-token"
TOOL_LABEL = next(r["incoming-path"] for r in RULES if r["package-id"] == "tool")
EVIL = "<script>alert(1)</script> Ltd"
COMPANIES = ["Acme Corp", "Globex", EVIL, "Initech"]
COUNTRIES = ["US", "DE", "FR", "IN"]
AGENTS = ["curl/8.5.0", "Wget/1.21.3", 'pip/24.0 {"implementation":{"name":"CPython"}}',
          "uv/0.5.1", "python-requests/2.32.3"]
VERSIONS = ["2.1.0", "2.0.3", "1.9.9", "1.0.0"]
HISTORY_DAYS = 95


def artifacts() -> Path:
    """Where the run keeps its screenshots."""
    folder = Path(os.environ.get("SCARFGW_ARTIFACTS", "var/artifacts")) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def geoip(tmp_path: Path) -> list[str]:
    """Country and ASN databases for 198.18.0.0/16: four companies, four countries."""
    mmdb_writer = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    country = mmdb_writer.MMDBWriter(ip_version=4, database_type="GeoLite2-Country")
    asn = mmdb_writer.MMDBWriter(ip_version=4, database_type="GeoLite2-ASN")
    for index in range(4):
        block = netaddr.IPSet([f"198.18.{64 * index}.0/18"])
        country.insert_network(block, {"country": {"iso_code": COUNTRIES[index]}})
        asn.insert_network(block, {"autonomous_system_number": 64500 + index,
                                   "autonomous_system_organization": COMPANIES[index]})
    paths = [str(tmp_path / "country.mmdb"), str(tmp_path / "asn.mmdb")]
    country.to_db_file(paths[0])
    asn.to_db_file(paths[1])
    return paths


def history(events: list[dict[str, Any]], today: datetime) -> list[str]:
    """The gateway's real events copied onto the earlier days, a varying number a day."""
    lines = []
    for back in range(1, HISTORY_DAYS):
        day = today - timedelta(days=back)
        count = 6 + (back * 7) % 11 + (HISTORY_DAYS - back) // 8
        for n in range(count):
            event = dict(events[(n * 7 + back * 3) % len(events)])
            event["time"] = (day.replace(hour=n % 24, minute=n % 60)
                             .strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            event["request_id"] = f"history-{back}-{n}"
            lines.append(json.dumps(event) + "\n")
    return lines


@pytest_twisted.inlineCallbacks
def real_gateway(tmp_path: Path) -> Any:
    """A gateway with insights on, fed by real requests (and their copies on past days)."""
    engine = {"insights": {"engine": "duckdb",
                           "duckdb": {"path": str(tmp_path / "insights.duckdb")},
                           "tokens": [{"name": "maintainers", "sha256": token_hash(TOKEN),
                                       "packages": ["tool", "six"]},
                                      {"name": "six-only", "sha256": token_hash(OTHER_TOKEN),
                                       "packages": ["six"]}]},
              "events": jsonl_events(tmp_path, 0.05)}
    gateway = yield _run_gateway(tmp_path, engine, databases=geoip(tmp_path))
    sent = 0
    for n in range(48):
        client = f"198.18.{(n * 37) % 256}.{n % 250 + 1}"
        agent = AGENTS[n % len(AGENTS)]
        if n % 4 == 3:
            host, path = "pypi.example.test", "/simple/six/six-1.16.0-py2.py3-none-any.whl"
        else:
            host, path = "get.example.test", f"/download/tool-{VERSIONS[n // 3 % 4]}.tar.gz"
        answer = yield raw_request(gateway.port, "GET", path,
                                   [("Host", host), ("User-Agent", agent),
                                    ("X-Forwarded-For", client)])
        assert answer.status in (200, 302, 307)
        sent += 1
    for _ in range(400):
        written = gateway.events()
        if len(written) >= sent:
            break
        yield deferLater(0.02)
    assert len(written) == sent
    today = datetime.now(UTC).replace(microsecond=0)
    with gateway.events_path.open("a") as sink:
        sink.writelines(history(written, today))
    insights = gateway.service.insights.port.getHost().port
    start = (today - timedelta(days=HISTORY_DAYS)).date().isoformat()
    path = f"/api/v1/packages/tool/downloads?from={start}&to={today.date().isoformat()}"
    for _ in range(400):
        status, _, body = yield threads.deferToThread(
            http_get, f"http://127.0.0.1:{insights}{path}", {"Authorization": f"Bearer {TOKEN}"})
        days = {point["period"] for point in json.loads(body).get("series", [])}
        if status == 200 and len(days) >= HISTORY_DAYS - 1:
            break
        yield deferLater(0.05)
    assert len(days) >= HISTORY_DAYS - 1, "the history was not ingested"
    ui = next(child for child in gateway.service.insights if isinstance(child, InsightsUI))
    # the reader keeps totals for a minute and the badges refresh every minute: forget the
    # (empty) totals of the start and refresh now, instead of waiting two minutes
    gateway.service.insights.reader._totals.clear()
    yield ui.counts.refresh()
    return gateway, f"http://127.0.0.1:{insights}"


def browser() -> Any:
    """Headless Chromium through chromedriver, offline, with its console log readable."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are missing (scripts/test.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)  # elements of the next page, after a submit
    return driver


def shoot(driver: Any, name: str, width: int) -> None:
    """A full-page screenshot of the current page at ``width`` px."""
    driver.set_window_size(width, 900)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(height, 600))
    driver.save_screenshot(str(artifacts() / f"{name}-{width}.png"))


def layout_shift(driver: Any) -> float:
    """The page's cumulative layout shift so far (0: nothing moved while it loaded)."""
    return float(driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        let total = 0;
        new PerformanceObserver(list => list.getEntries().forEach(e => total += e.value))
            .observe({type: "layout-shift", buffered: true});
        setTimeout(() => done(total), 300);"""))


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] in ("SEVERE", "ERROR")]


def flow(base: str) -> dict[str, Any]:
    """Everything a maintainer does, in one browser; returns what the test checks."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    seen: dict[str, Any] = {"errors": []}
    driver = browser()
    try:
        driver.get(base + "/")
        shoot(driver, "signin", 1280)
        field = driver.find_element(By.ID, "token")
        field.send_keys("sgi_wrong")
        field.send_keys(Keys.ENTER)
        seen["wrong"] = driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
        seen["wrong_has_list"] = bool(driver.find_elements(By.CSS_SELECTOR, ".package-row"))
        shoot(driver, "signin-refused", 375)
        refused = console_errors(driver)  # the refused sign-in is answered 401, as it should
        seen["refused_logged"] = refused

        driver.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
        rows = driver.find_elements(By.CSS_SELECTOR, ".package-row")
        seen["labels"] = [row.find_element(By.CSS_SELECTOR, ".package-name").text
                          for row in rows]
        seen["sparklines"] = len(driver.find_elements(By.CSS_SELECTOR, ".spark polyline"))
        seen["cookie"] = driver.get_cookie("scarfgw_session")
        for width in (1280, 375):
            shoot(driver, "packages", width)
        seen["errors"] += console_errors(driver)

        # keyboard: tab from the top reaches the first package link
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        for _ in range(4):
            active = driver.switch_to.active_element
            if active.get_attribute("class") == "package-link":
                break
            active.send_keys(Keys.TAB)
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        WebDriverWait(driver, 10).until(lambda d: "/packages/" in d.current_url)
        seen["package_title"] = driver.find_element(By.TAG_NAME, "h1").text
        seen["bars_30"] = len(driver.find_elements(By.CSS_SELECTOR, ".chart rect.bar"))
        seen["kpi_30"] = driver.find_element(By.ID, "kpi-downloads").text
        seen["companies"] = [cell.text for cell in driver.find_elements(
            By.CSS_SELECTOR, "section[aria-labelledby=companies-title] td.key")]
        seen["layout_shift"] = layout_shift(driver)
        for width in (1280, 375):
            shoot(driver, "package", width)
        seen["errors"] += console_errors(driver)

        driver.set_window_size(1280, 900)
        driver.find_element(By.LINK_TEXT, "90 days").click()
        seen["url_90"] = driver.current_url
        seen["bars_90"] = len(driver.find_elements(By.CSS_SELECTOR, ".chart rect.bar"))
        Select(driver.find_element(By.NAME, "interval")).select_by_value("week")
        driver.find_element(By.CSS_SELECTOR, ".range-form button").click()
        WebDriverWait(driver, 10).until(lambda d: "interval=week" in d.current_url)
        seen["url_weeks"] = driver.current_url
        seen["bars_weeks"] = len(driver.find_elements(By.CSS_SELECTOR, ".chart rect.bar"))
        shoot(driver, "package-90-days-by-week", 1280)
        seen["errors"] += console_errors(driver)

        cookie = driver.get_cookie("scarfgw_session")["value"]
        for table in ("version", "companies"):
            link = driver.find_element(By.CSS_SELECTOR, f".card-head a.csv[href*='table={table}']")
            fetch = urllib.request.Request(link.get_attribute("href"),
                                           headers={"Cookie": f"scarfgw_session={cookie}"})
            with urllib.request.urlopen(fetch) as answer:
                seen[f"csv_{table}"] = answer.read().decode()
                seen["csv_type"] = answer.headers["Content-Type"]

        driver.get(base + "/badge/downloads/tool.svg?style=for-the-badge&logo=python")
        seen["badge_source"] = driver.page_source
        driver.get(base + "/badge/downloads/tool.svg?style=for-the-badge&period=month")
        seen["badge_month"] = driver.page_source
        badges = "".join(
            f'<p><img alt="{style}" src="{path}?style={style}{extra}"></p>'
            for style in ("flat", "flat-square", "plastic", "for-the-badge", "social")
            for path, extra in (("/badge/downloads/tool.svg", "&logo=python&period=month"),
                                ("/package/company-badge/tool", "&color=orange")))
        driver.get(base + "/static/app.css")  # a page of the site's origin, to draw them on
        driver.execute_script("document.body.innerHTML = arguments[0]", badges)
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete)"))
        seen["badges_drawn"] = driver.execute_script(
            "return [...document.images].filter(i => i.naturalWidth > 0).length")
        shoot(driver, "badges", 375)
        seen["errors"] += console_errors(driver)
        driver.get(base + "/")
        driver.find_element(By.CSS_SELECTOR, ".signout button").click()
        seen["after_signout"] = bool(driver.find_elements(By.ID, "token"))
        seen["cookie_after"] = driver.get_cookie("scarfgw_session")
        seen["errors"] += console_errors(driver)

        # a token for another package neither lists nor opens this one
        driver.find_element(By.ID, "token").send_keys(OTHER_TOKEN + Keys.ENTER)
        seen["other_labels"] = [row.text for row in driver.find_elements(
            By.CSS_SELECTOR, ".package-name")]
        seen["errors"] += console_errors(driver)
        driver.get(base + "/packages/tool")
        seen["other_denied"] = driver.find_element(By.TAG_NAME, "h1").text
        seen["other_logged"] = console_errors(driver)  # the 403 itself
    finally:
        driver.quit()
    return seen


@pytest_twisted.inlineCallbacks
def test_maintainer_flow_in_chromium(tmp_path):
    gateway, site_url = yield real_gateway(tmp_path)
    try:
        seen = yield threads.deferToThread(flow, site_url)
    finally:
        yield gateway.stop()
    assert "not accepted" in seen["wrong"] and not seen["wrong_has_list"]
    assert len(seen["refused_logged"]) == 1 and "401" in seen["refused_logged"][0]
    assert seen["labels"] == [TOOL_LABEL, "six"]
    assert seen["sparklines"] == 2
    assert seen["cookie"]["httpOnly"] is True and seen["cookie"]["sameSite"] == "Strict"
    assert seen["package_title"] == TOOL_LABEL  # reached by keyboard
    assert seen["layout_shift"] == 0.0
    assert seen["bars_30"] == 30 and int(seen["kpi_30"].replace(",", "")) > 0
    assert set(seen["companies"]) == set(COMPANIES)  # EVIL shown as text, not run
    assert "from=" in seen["url_90"] and seen["bars_90"] == 90
    assert "interval=week" in seen["url_weeks"] and 13 <= seen["bars_weeks"] <= 14
    assert seen["csv_type"].startswith("text/csv")
    versions = seen["csv_version"].splitlines()
    assert versions[0] == "version,downloads,unique"
    assert sorted(line.split(",")[0] for line in versions[1:]) == sorted(VERSIONS)
    assert EVIL in seen["csv_companies"]
    assert "DOWNLOADS" in seen["badge_source"] and seen["badges_drawn"] == 10
    # the month badge and the dashboard's 30 days agree
    assert f">{compact(int(seen['kpi_30'].replace(',', ''))).upper()}/MONTH<" in seen["badge_month"]
    assert seen["after_signout"] and seen["cookie_after"] is None
    assert seen["other_labels"] == ["six"]
    assert "may not read" in seen["other_denied"] and "403" in seen["other_logged"][0]
    assert seen["errors"] == []
