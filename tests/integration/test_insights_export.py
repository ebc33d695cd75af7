"""The NDJSON export (``/api/v1/events``) through a real socket: the gateway fetches the next
page only as fast as the client reads, so a client that stops reading costs a page or so of
memory, not the whole export; the pages are closed when the client goes away or a page
fails."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import date
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.web.server import Site

from scarfgw.insights.model import Package
from scarfgw.insights.settings import TokenConfig
from scarfgw.insights.site import insights_root
from scarfgw.insights.tokens import Tokens, token_hash

pytestmark = pytest.mark.integration

TOKEN = "sgi_export-test"
PAGES = 40
LINE = b'{"package":"pkg","filler":"' + b"x" * 1000 + b'"}\n'
PAGE = LINE * 1000
"""About 1 MB: the kernel's socket buffers (a few MB) hold only a few pages."""


class Pages:
    """``PAGES`` pages, each answered on a later reactor turn (as the query pool does);
    ``fail_at`` makes that page fail. Counts the pages fetched and whether it was closed."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fetched = 0
        self.closed = False
        self.fail_at = fail_at

    def next_page(self) -> defer.Deferred[bytes]:
        assert not self.closed, "a page fetched after close"
        self.fetched += 1
        number = self.fetched

        def page() -> bytes:
            if number == self.fail_at:
                raise OSError("the store went away")
            return PAGE if number <= PAGES else b""

        return task.deferLater(reactor, 0, page)

    def close(self) -> defer.Deferred[None]:
        self.closed = True
        return defer.succeed(None)


class Reader:
    """The reader of one package whose export is :attr:`pages`."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def packages(self) -> Sequence[Package]:
        return [Package("pkg", "file", "pkg", ("get.test",))]

    def events(self, package_id: str, start: date, end: date) -> Pages:
        return self.pages


def _serve(pages: Pages) -> Any:
    tokens = Tokens([TokenConfig("t", token_hash(TOKEN), frozenset({"*"}))])
    site: Any = Site(insights_root(Reader(pages), tokens, reactor.seconds))  # type: ignore[arg-type]
    return reactor.listenTCP(0, site, interface="127.0.0.1")


def _connect(port: int) -> socket.socket:
    """A client that asks for the export with a small receive buffer and reads nothing yet."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    client.connect(("127.0.0.1", port))
    client.sendall(f"GET /api/v1/events?package=pkg HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())
    return client


def _read_all(client: socket.socket) -> bytes:
    chunks = []
    while data := client.recv(1 << 20):
        chunks.append(data)
    client.close()
    return b"".join(chunks)


def _body(response: bytes) -> bytes:
    """The de-chunked body of a chunked HTTP/1.1 response (up to a cut, if any)."""
    head, _, rest = response.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    body = bytearray()
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(body) + b"<end>"
        body += rest[:size]
        rest = rest[size + 2:]
    return bytes(body)


@pytest_twisted.inlineCallbacks
def test_a_client_that_stops_reading_holds_up_the_export_not_the_memory() -> Any:
    pages = Pages()
    port = _serve(pages)
    try:
        client = yield threads.deferToThread(_connect, port.getHost().port)
        yield task.deferLater(reactor, 1.0, lambda: None)
        assert pages.fetched <= 8, f"{pages.fetched} of {PAGES} pages fetched unread"
        response = yield threads.deferToThread(_read_all, client)
        assert _body(response) == PAGE * PAGES + b"<end>"
        assert pages.fetched == PAGES + 1
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_client_that_goes_away_closes_the_export() -> Any:
    pages = Pages()
    port = _serve(pages)
    try:
        client = yield threads.deferToThread(_connect, port.getHost().port)
        yield task.deferLater(reactor, 0.5, lambda: None)
        client.close()
        for _ in range(100):
            if pages.closed:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        assert pages.closed
        fetched = pages.fetched
        yield task.deferLater(reactor, 0.3, lambda: None)
        assert pages.fetched == fetched < PAGES
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_failing_page_cuts_the_export_and_closes_it() -> Any:
    pages = Pages(fail_at=3)
    port = _serve(pages)
    try:
        client = yield threads.deferToThread(_connect, port.getHost().port)
        response = yield threads.deferToThread(_read_all, client)
        assert _body(response) == PAGE * 2  # no final chunk: the client sees a cut
        assert pages.closed and pages.fetched == 3
    finally:
        yield port.stopListening()
