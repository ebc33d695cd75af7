"""The dashboard and badges in a real headless Chromium (Debian's chromium + chromedriver):
sign in, a wrong token, the package list, a package page and its chart, a range change, CSV
export, sign out; no console errors; screenshots at 1280 and 375 px wide.

Screenshots go to ``$SCARFGW_ARTIFACTS`` (default ``var/artifacts``, ignored by git).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.internet import threads
from twisted.web.resource import Resource
from twisted.web.server import Site

from scarfgw.insights.model import Package
from scarfgw.insights.settings import TokenConfig
from scarfgw.insights.tokens import Tokens, token_hash
from scarfgw.insights.ui import InsightsUI
from tests.insights_fakes import MemoryReader, sample_downloads

reactor: Any = global_reactor

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "sgi_browser-test-token"
OTHER_TOKEN = "sgi_other-package-token"
PACKAGES = (
    Package("pkg-hello", "python", "hello-<em>world</em>", ("get.example.test",)),
    Package("pkg-other", "docker", "acme/other", ("cr.example.test",)),
)


def artifacts() -> Path:
    """Where the run keeps its screenshots."""
    folder = Path(os.environ.get("SCARFGW_ARTIFACTS", "var/artifacts")) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def site_url():
    """A real insights site on 127.0.0.1 with the badges and the dashboard."""
    today = datetime.now(UTC).date()
    reader = MemoryReader(PACKAGES, sample_downloads(today))
    tokens = Tokens([TokenConfig("hello-maintainers", token_hash(TOKEN),
                                 frozenset({"pkg-hello", "pkg-other"})),
                     TokenConfig("other", token_hash(OTHER_TOKEN), frozenset({"pkg-other"}))])
    ui = InsightsUI(reader, tokens.grant, reactor)
    ui.startService()
    root = Resource()
    ui.install(root)
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    ui.stopService()
    pytest_twisted.blockon(port.stopListening())


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
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def shoot(driver: Any, name: str, width: int) -> None:
    """A full-page screenshot of the current page at ``width`` px."""
    driver.set_window_size(width, 900)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(height, 600))
    driver.save_screenshot(str(artifacts() / f"{name}-{width}.png"))


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] in ("SEVERE", "ERROR")]


def flow(base: str) -> dict[str, Any]:
    """Everything a maintainer does, in one browser; returns what the test checks."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

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
        seen["keyboard_title"] = driver.find_element(By.TAG_NAME, "h1").text
        driver.back()
        driver.find_element(By.PARTIAL_LINK_TEXT, "hello-<em>").click()
        seen["package_title"] = driver.find_element(By.TAG_NAME, "h1").text
        seen["bars_30"] = len(driver.find_elements(By.CSS_SELECTOR, ".chart rect.bar"))
        seen["kpi_30"] = driver.find_element(By.ID, "kpi-downloads").text
        seen["companies"] = [cell.text for cell in driver.find_elements(
            By.CSS_SELECTOR, "section[aria-labelledby=companies-title] td.key")]
        for width in (1280, 375):
            shoot(driver, "package", width)
        seen["errors"] += console_errors(driver)

        driver.set_window_size(1280, 900)
        select = driver.find_element(By.NAME, "interval")
        select.send_keys("week")
        driver.find_element(By.LINK_TEXT, "90 days").click()
        seen["url_90"] = driver.current_url
        seen["bars_90"] = len(driver.find_elements(By.CSS_SELECTOR, ".chart rect.bar"))
        driver.find_element(By.NAME, "interval").send_keys("week")
        driver.find_element(By.CSS_SELECTOR, ".range-form button").click()
        seen["url_weeks"] = driver.current_url
        seen["bars_weeks"] = len(driver.find_elements(By.CSS_SELECTOR, ".chart rect.bar"))
        shoot(driver, "package-90-days-by-week", 1280)
        seen["errors"] += console_errors(driver)

        csv_link = driver.find_element(By.CSS_SELECTOR,
                                       ".card-head a.csv[href*='table=version']")
        seen["csv_href"] = csv_link.get_attribute("href")
        cookie = driver.get_cookie("scarfgw_session")["value"]
        fetch = urllib.request.Request(seen["csv_href"],
                                       headers={"Cookie": f"scarfgw_session={cookie}"})
        with urllib.request.urlopen(fetch) as answer:
            seen["csv"] = answer.read().decode()
            seen["csv_type"] = answer.headers["Content-Type"]

        driver.get(base + "/badge/downloads/pkg-hello.svg?style=for-the-badge&logo=python")
        seen["badge_source"] = driver.page_source
        driver.get(base + "/")
        driver.find_element(By.CSS_SELECTOR, ".signout button").click()
        seen["after_signout"] = bool(driver.find_elements(By.ID, "token"))
        seen["cookie_after"] = driver.get_cookie("scarfgw_session")
        seen["errors"] += console_errors(driver)
    finally:
        driver.quit()
    return seen


@pytest_twisted.inlineCallbacks
def test_maintainer_flow_in_chromium(site_url):
    seen = yield threads.deferToThread(flow, site_url)
    assert "not accepted" in seen["wrong"] and not seen["wrong_has_list"]
    assert len(seen["refused_logged"]) == 1 and "401" in seen["refused_logged"][0]
    assert seen["labels"] == ["acme/other", "hello-<em>world</em>"]  # escaped, shown as text
    assert seen["sparklines"] == 2
    assert seen["cookie"]["httpOnly"] is True and seen["cookie"]["sameSite"] == "Strict"
    assert seen["keyboard_title"] == "acme/other"
    assert seen["package_title"] == "hello-<em>world</em>"
    assert seen["bars_30"] == 30 and int(seen["kpi_30"].replace(",", "")) > 0
    assert "<script>alert(1)</script> Ltd" in seen["companies"]
    assert "from=" in seen["url_90"] and seen["bars_90"] == 90
    assert "interval=week" in seen["url_weeks"] and 13 <= seen["bars_weeks"] <= 14
    assert seen["csv_type"].startswith("text/csv")
    lines = seen["csv"].splitlines()
    assert lines[0] == "version,downloads,unique" and len(lines) == 5
    assert "<b>1.0</b>" in seen["csv"]
    assert "DOWNLOADS" in seen["badge_source"]
    assert seen["after_signout"] and seen["cookie_after"] is None
    assert seen["errors"] == []
