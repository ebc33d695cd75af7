"""What the core answers: redirect, respond with bytes, or proxy to a backend.

Each decision carries the rule ``kind`` (for metrics) and the captures (analytics payloads)
it produced; the web shell adds the common event keys and the final status.

They are plain classes with ``Final`` attributes rather than frozen dataclasses: compiled
by mypyc, creating one costs about 26 ns against 445 ns for the dataclass's generated
``__init__``, once per request; mypy and the compiled code keep them read-only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

Capture = dict[str, Any]
"""Kind-specific event payload, e.g. ``{"kind": "docker", "package": ..., "image": ...}``."""

Header = tuple[str, str]


class _Answer:
    """Equality and ``repr`` over the attributes named in ``FIELDS``, as a dataclass has."""

    FIELDS: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self.FIELDS
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({values})"


class Redirect(_Answer):
    """Answer ``status`` (307 unless stated) with ``Location: location`` and an empty body."""

    FIELDS = ("location", "kind", "captures", "status")

    def __init__(self, location: str, kind: str, captures: tuple[Capture, ...] = (),
                 status: int = 307) -> None:
        self.location: Final = location
        self.kind: Final = kind
        self.captures: Final = captures
        self.status: Final = status


class Respond(_Answer):
    """Answer with exactly these status, headers and body.

    ``captures_before``: record the captures before the response is sent (telemetry).
    For HEAD the shell sends no body but keeps the headers (including Content-Length).
    """

    FIELDS = ("status", "kind", "headers", "body", "captures", "captures_before")

    def __init__(self, status: int, kind: str, headers: tuple[Header, ...] = (),
                 body: bytes = b"", captures: tuple[Capture, ...] = (),
                 captures_before: bool = False) -> None:
        self.status: Final = status
        self.kind: Final = kind
        self.headers: Final = headers
        self.body: Final = body
        self.captures: Final = captures
        self.captures_before: Final = captures_before


class PackumentFetch:
    """What the shell needs to answer a packument request: the package ``name``, the
    document's ``path`` under the backend registry's URL ``base`` (which its tarball URLs
    start with), the largest document accepted (``max_bytes``)."""

    __slots__ = ("base", "max_bytes", "name", "path")

    def __init__(self, name: str, path: str, base: str, max_bytes: int) -> None:
        self.name = name
        self.path = path
        self.base = base
        self.max_bytes = max_bytes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PackumentFetch) and (
            (self.name, self.path, self.base, self.max_bytes)
            == (other.name, other.path, other.base, other.max_bytes))

    __hash__ = None  # type: ignore[assignment]


class Proxy(_Answer):
    """Forward the request to ``backend`` (``host`` or ``host:port``), stream the answer back.

    ``rewrite_token_realm``: the backend's Bearer challenges name the gateway's own token
    endpoint instead of the backend's realm. ``token_endpoint``: this request is for that
    endpoint, so it goes to the backend's real realm instead of its own path. ``base_url``:
    the backend's URL where ``proxy.upstreams`` names none (default ``https://backend``);
    ``path``: the path asked of it instead of the request's. ``packument``: the request is
    for an npm package document, which the shell fetches, rewrites and answers itself.
    ``site``: ``base_url`` is a web site behind the gateway (the insights site on
    ``insights.domain``): every method is passed on, with its body and the client's scheme as
    ``X-Forwarded-Proto``.
    """

    FIELDS = ("backend", "kind", "captures", "rewrite_token_realm", "token_endpoint",
              "base_url", "path", "packument", "site")

    def __init__(self, backend: str, kind: str, captures: tuple[Capture, ...] = (),
                 rewrite_token_realm: bool = False, token_endpoint: bool = False,
                 base_url: str | None = None, path: str | None = None,
                 packument: PackumentFetch | None = None, site: bool = False) -> None:
        self.backend: Final = backend
        self.kind: Final = kind
        self.captures: Final = captures
        self.rewrite_token_realm: Final = rewrite_token_realm
        self.token_endpoint: Final = token_endpoint
        self.base_url: Final = base_url
        self.path: Final = path
        self.packument: Final = packument
        self.site: Final = site


Decision = Redirect | Respond | Proxy
