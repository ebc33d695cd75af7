"""Error bodies the shell sends itself (registry-style JSON, as clients of /v2 expect)."""

from __future__ import annotations

import json


def registry_error(code: str, message: str) -> bytes:
    """A Docker registry API error body: ``{"errors":[{"code","message","detail"}]}``."""
    return json.dumps(
        {"errors": [{"code": code, "message": message, "detail": {}}]}, separators=(",", ":")
    ).encode()
