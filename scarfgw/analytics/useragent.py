"""The client runtime and its version, read from a User-Agent header (pure, no I/O).

Only the first product token counts (``docker/27.0.3 go/go1.22 ...``, ``pip/23.2.1 {...}``):
tools put their own name first, and what follows (pip's JSON, docker's platform details)
is free-form. Browsers (``Mozilla/5.0 ...``) are reported as ``browser`` without a version.
"""

from __future__ import annotations

import functools
import re
from typing import Final

_PRODUCT: Final = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)/v?([0-9][0-9A-Za-z.+_~-]{0,31})")

RUNTIMES: Final = {
    "docker": "docker",
    "containerd": "containerd",
    "libpod": "podman",
    "podman": "podman",
    # podman 4 pulls as "containers/5.23.1 (github.com/containers/image)", the version of
    # its image library
    "containers": "podman",
    "skopeo": "skopeo",
    "pip": "pip",
    "uv": "uv",
    "poetry": "poetry",
    "npm": "npm",
    "curl": "curl",
    "wget": "wget",
}


def client_runtime(user_agent: str | None) -> dict[str, str | None]:
    """``{"runtime": ..., "version": ...}``; both None for an absent or unknown client."""
    runtime, version = _parse(user_agent or "")
    return {"runtime": runtime, "version": version}


@functools.lru_cache(maxsize=4096)
def _parse(user_agent: str) -> tuple[str | None, str | None]:
    """Memoised: clients send few distinct User-Agent strings, parsed once each."""
    match = _PRODUCT.match(user_agent)
    if match is None:
        return None, None
    product = match.group(1).lower()
    if product == "mozilla":
        return "browser", None
    runtime = RUNTIMES.get(product)
    return runtime, match.group(2) if runtime else None
