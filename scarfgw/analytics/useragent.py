"""The client runtime and its version, read from a User-Agent header (pure, no I/O).

Only the first product token counts (``docker/27.0.3 go/go1.22 ...``, ``pip/23.2.1 {...}``):
tools put their own name first, and what follows (pip's JSON, docker's platform details)
is free-form. Browsers (``Mozilla/5.0 ...``) are reported as ``browser`` without a version.

A few clients need more than the first token: containers/image (podman, and buildah or
CRI-O when they do not name themselves) sends ``containers/5.23.1
(github.com/containers/image)``, reported as ``podman``; Go's default client sends
``Go-http-client/1.1`` (an HTTP version, so no version); regclient sends
``regclient/regclient (v0.8.0)`` and APT ``Debian APT-HTTP/1.3 (2.6.1)``: the version is the
one in parentheses.
"""

from __future__ import annotations

import functools
import re
from typing import Final

_PRODUCT: Final = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)/v?([0-9][0-9A-Za-z.+_~-]{0,31})")
_PARENTHESISED: Final = re.compile(
    r"(regclient/regclient|(?:Debian |Ubuntu )?APT-HTTP/[0-9.]+)"
    r" \(v?([0-9][0-9A-Za-z.+_~-]{0,31})\)")
_PARENTHESISED_RUNTIMES: Final = {"regclient/regclient": "regclient"}

RUNTIMES: Final = {
    "docker": "docker",
    "containerd": "containerd",
    "libpod": "podman",
    "podman": "podman",
    "containers": "podman",
    "buildah": "buildah",
    "cri-o": "cri-o",
    "skopeo": "skopeo",
    "crane": "crane",
    "go-containerregistry": "crane",
    "regclient": "regclient",
    "nerdctl": "nerdctl",
    "go-http-client": "go",
    "pip": "pip",
    "uv": "uv",
    "poetry": "poetry",
    "npm": "npm",
    "yarn": "yarn",
    "pnpm": "pnpm",
    "bun": "bun",
    "curl": "curl",
    "wget": "wget",
}
_NO_VERSION: Final = frozenset({"go"})
"""Runtimes whose product version is not theirs (Go's client names the HTTP version)."""


def client_runtime(user_agent: str | None) -> dict[str, str | None]:
    """``{"runtime": ..., "version": ...}``; both None for an absent or unknown client."""
    runtime, version = _parse(user_agent or "")
    return {"runtime": runtime, "version": version}


@functools.lru_cache(maxsize=4096)
def _parse(user_agent: str) -> tuple[str | None, str | None]:
    """Memoised: clients send few distinct User-Agent strings, parsed once each."""
    special = _PARENTHESISED.match(user_agent)
    if special is not None:
        return _PARENTHESISED_RUNTIMES.get(special.group(1), "apt"), special.group(2)
    match = _PRODUCT.match(user_agent)
    if match is None:
        return None, None
    product = match.group(1).lower()
    if product == "mozilla":
        return "browser", None
    runtime = RUNTIMES.get(product)
    if runtime is None or runtime in _NO_VERSION:
        return runtime, None
    return runtime, match.group(2)
