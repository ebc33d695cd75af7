"""The dashboard over real sockets (twisted.web on 127.0.0.1) with an in-memory Reader:
sessions, access per token, bad input answered clearly (never a 500), CSV export."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as global_reactor
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from scarfgw.insights.model import Package
from scarfgw.insights.settings import TokenConfig
from scarfgw.insights.tokens import Tokens, token_hash
from scarfgw.insights.ui import InsightsUI
from tests.insights_fakes import MemoryReader, sample_downloads

reactor: Any = global_reactor

ALL = "sgi_all"
OTHER = "sgi_other"


@pytest.fixture
def site():
    reader = MemoryReader(
        [Package("pkg-hello", "python", "<script>x</script>hello", ("get.example.test",)),
         Package("pkg-other", "docker", "acme/other", ("cr.example.test",))],
        sample_downloads(datetime.now(UTC).date()))
    tokens = Tokens([TokenConfig("all", token_hash(ALL), frozenset({"*"})),
                     TokenConfig("other", token_hash(OTHER), frozenset({"pkg-other"}))])
    ui = InsightsUI(reader, tokens.grant, reactor)
    ui.startService()
    root = Resource()
    ui.install(root)
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}", reader
    ui.stopService()
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.inlineCallbacks
def sign_in(base, token):
    answer = yield treq.post(base + "/session", data={"token": token}, allow_redirects=False)
    yield treq.content(answer)
    return answer


def cookie_of(answer):
    header = answer.headers.getRawHeaders(b"set-cookie")[0].decode()
    return header.split(";")[0].split("=", 1)[1], header


@pytest_twisted.inlineCallbacks
def test_sign_in_cookie_and_escaped_labels(site):
    base, _ = site
    answer = yield sign_in(base, ALL)
    assert answer.code == 303
    value, header = cookie_of(answer)
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Secure" not in header
    page = yield treq.get(base + "/", cookies={"scarfgw_session": value})
    body = (yield treq.content(page)).decode()
    assert page.code == 200
    assert "&lt;script&gt;x&lt;/script&gt;hello" in body and "<script>" not in body
    wrong = yield sign_in(base, "sgi_nope")
    assert wrong.code == 401


@pytest_twisted.inlineCallbacks
def test_secure_cookie_when_forwarded_over_https(site):
    base, _ = site
    answer = yield treq.post(base + "/session", data={"token": ALL}, allow_redirects=False,
                             headers=Headers({b"X-Forwarded-Proto": [b"https"]}))
    yield treq.content(answer)
    assert "Secure" in cookie_of(answer)[1]


@pytest_twisted.inlineCallbacks
def test_tampered_cookie_is_refused(site):
    base, _ = site
    value, _ = cookie_of((yield sign_in(base, ALL)))
    tampered = value[:-6] + ("A" if value[-6] != "A" else "B") + value[-5:]
    for cookie in (tampered, "garbage", "x" * 5000):
        page = yield treq.get(base + "/packages/pkg-hello", allow_redirects=False,
                              cookies={"scarfgw_session": cookie})
        yield treq.content(page)
        assert page.code == 303  # back to the sign-in form
    page = yield treq.get(base + "/", cookies={"scarfgw_session": tampered})
    assert 'name="token"' in (yield treq.content(page)).decode()


@pytest_twisted.inlineCallbacks
def test_a_token_for_another_package_cannot_see_it(site):
    base, _ = site
    value, _ = cookie_of((yield sign_in(base, OTHER)))
    cookies = {"scarfgw_session": value}
    listing = yield treq.get(base + "/", cookies=cookies)
    body = (yield treq.content(listing)).decode()
    assert "acme/other" in body and "hello" not in body
    for path in ("/packages/pkg-hello", "/packages/pkg-hello/export.csv?table=companies"):
        page = yield treq.get(base + path, cookies=cookies)
        assert page.code == 403
        assert "hello" not in (yield treq.content(page)).decode()


@pytest_twisted.inlineCallbacks
def test_bad_input_gets_clear_answers_never_500(site):
    base, reader = site
    value, _ = cookie_of((yield sign_in(base, ALL)))
    cookies = {"scarfgw_session": value}
    cases = {
        "/packages/pkg-hello?from=yesterday": (400, "from"),
        "/packages/pkg-hello?from=2026-12-05&to=2026-01-01": (400, "after"),
        "/packages/pkg-hello?from=1900-01-01&to=2026-01-01": (400, "at most"),
        "/packages/pkg-hello?interval=fortnight": (400, "interval"),
        "/packages/pkg-hello?from=2020-01-01&to=2022-12-31&interval=day": (400, "periods"),
        "/packages/pkg-hello/export.csv?table=passwords": (400, "table"),
        "/packages/nope": (404, "no such package"),
        "/packages/pkg-hello/extra/deep": (404, "no such page"),
        "/packages/pkg-hello?" + "a=b&" * 3000: (200, "Downloads"),
    }
    for path, (status, text) in cases.items():
        page = yield treq.get(base + path, cookies=cookies)
        body = (yield treq.content(page)).decode()
        assert page.code == status, path
        assert text.lower() in body.lower(), path
    reader.fail = True
    page = yield treq.get(base + "/packages/pkg-hello", cookies=cookies)
    assert page.code == 503 and "did not answer" in (yield treq.content(page)).decode()


@pytest_twisted.inlineCallbacks
def test_csv_export_is_what_the_page_shows(site):
    base, _ = site
    value, _ = cookie_of((yield sign_in(base, ALL)))
    cookies = {"scarfgw_session": value}
    query = "from=2026-11-01&to=2026-11-30&interval=week"
    answer = yield treq.get(base + f"/packages/pkg-hello/export.csv?{query}&table=series",
                            cookies=cookies)
    lines = (yield treq.content(answer)).decode().splitlines()
    assert answer.headers.getRawHeaders(b"content-type")[0].startswith(b"text/csv")
    assert lines[0] == "period,downloads,unique" and lines[1].startswith("2026-10-26,")
    assert len(lines) == 1 + 6  # the weeks of Oct 26 .. Nov 30
    companies = yield treq.get(base + f"/packages/pkg-hello/export.csv?{query}"
                               "&table=companies", cookies=cookies)
    text = (yield treq.content(companies)).decode()
    assert text.startswith("company,downloads,unique,first_seen,last_seen")
    assert "<script>alert(1)</script> Ltd" in text


@pytest_twisted.inlineCallbacks
def test_sign_out_clears_the_cookie(site):
    base, _ = site
    answer = yield treq.post(base + "/session/end", allow_redirects=False)
    yield treq.content(answer)
    assert answer.code == 303
    assert "Max-Age=0" in answer.headers.getRawHeaders(b"set-cookie")[0].decode()
