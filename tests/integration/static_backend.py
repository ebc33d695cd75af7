"""A static backend for the real-client tests: files by raw request path, with ETags.

It answers ``If-None-Match`` with 304 and, for a file that has an abbreviated form, serves
that form with its own content type when the request's Accept asks for npm's
``application/vnd.npm.install-v1+json`` (as npm registries do). It records every request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import resource, server

from tests.support import RecordedRequest, record_request

ABBREVIATED = "application/vnd.npm.install-v1+json"


@dataclass
class StaticFile:
    """A file's body and content type, and optionally an abbreviated npm form."""

    body: bytes
    content_type: str = "application/octet-stream"
    abbreviated: bytes | None = None


class _Files(resource.Resource):
    isLeaf = True

    def __init__(self, files: dict[str, StaticFile]) -> None:
        super().__init__()
        self.files = files
        self.received: list[RecordedRequest] = []
        self.delay = 0.0
        """Seconds each answer waits (requests pile up meanwhile)."""

    def render(self, request: server.Request) -> bytes | int:
        self.received.append(record_request(request))
        if self.delay:
            def answer() -> None:
                request.write(self._answer(request))
                request.finish()

            reactor.callLater(self.delay, answer)
            return server.NOT_DONE_YET
        return self._answer(request)

    def _answer(self, request: server.Request) -> bytes:
        found = self.files.get(request.uri.decode().partition("?")[0])
        if found is None:
            request.setResponseCode(404)
            return b'{"error":"Not found"}'
        body, content_type = found.body, found.content_type
        accept = (request.getHeader("accept") or "").lower()
        if found.abbreviated is not None and ABBREVIATED in accept:
            body, content_type = found.abbreviated, ABBREVIATED
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        request.setHeader("ETag", etag)
        request.setHeader("Content-Type", content_type)
        if request.getHeader("if-none-match") == etag:
            request.setResponseCode(304)
            return b""
        return body


@dataclass
class StaticBackend:
    """A running static backend: ``url``, the requests it ``received``, its ``files``."""

    site: _Files
    port: Any
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.2:{self.port.getHost().port}"

    @property
    def received(self) -> list[RecordedRequest]:
        """Requests received so far."""
        return self.site.received

    def stop(self) -> Any:
        """Stop listening."""
        return self.port.stopListening()


@defer.inlineCallbacks
def start_static_backend(files: dict[str, StaticFile] | None = None) -> Any:
    """Serve ``files`` (raw path -> file; fill ``backend.site.files`` later if the bodies
    need the URL) on 127.0.0.2, a different loopback address from the gateway's."""
    site = _Files(files or {})
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.2").listen(server.Site(site))
    return StaticBackend(site, port)


def directory_files(root: Path, prefix: str = "") -> dict[str, StaticFile]:
    """Every file under ``root`` as ``prefix/<relative path>``."""
    return {
        f"{prefix}/{path.relative_to(root).as_posix()}": StaticFile(path.read_bytes())
        for path in sorted(root.rglob("*")) if path.is_file()
    }
