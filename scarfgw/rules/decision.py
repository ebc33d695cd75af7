"""What the core answers: redirect, respond with bytes, or proxy to a backend.

Each decision carries the rule ``kind`` (for metrics) and the captures (analytics payloads)
it produced; the web shell adds the common event keys and the final status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Capture = dict[str, Any]
"""Kind-specific event payload, e.g. ``{"kind": "docker", "package": ..., "image": ...}``."""

Header = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer ``status`` (307 unless stated) with ``Location: location`` and an empty body."""

    location: str
    kind: str
    captures: tuple[Capture, ...] = ()
    status: int = 307


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer with exactly these status, headers and body.

    ``captures_before``: record the captures before the response is sent (telemetry).
    For HEAD the shell sends no body but keeps the headers (including Content-Length).
    """

    status: int
    kind: str
    headers: tuple[Header, ...] = ()
    body: bytes = b""
    captures: tuple[Capture, ...] = ()
    captures_before: bool = False


@dataclass(frozen=True, slots=True)
class Proxy:
    """Forward the request to ``backend`` (``host`` or ``host:port``), stream the answer back.

    ``options`` carries rule-level proxy settings (e.g. ``token_realm``).
    """

    backend: str
    kind: str
    captures: tuple[Capture, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


Decision = Redirect | Respond | Proxy
