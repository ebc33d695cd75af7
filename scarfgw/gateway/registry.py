"""Everything the proxy does specifically for container registries, driven by the typed
fields of the :class:`~scarfgw.rules.decision.Proxy` decision.

- Redirects (302/307) to a ``/v2`` path are followed by the gateway itself, not relayed.
- A relative ``Location`` is made absolute on the public backend (clients never learn the
  internal upstream the gateway reaches it by).
- With ``rewrite_token_realm`` a backend's Bearer challenge names the gateway's own token
  endpoint (``/v2/token/...``) as realm; token requests arriving there go to the backend's
  real realm (learned from its challenges, or asked for on ``/v2/``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

from scarfgw.rules.docker import token_path

FOLLOWED_STATUSES = (302, 307)
"""Backend answers that are redirects (followed when they point at the registry API)."""
REALM_PROBE_PATH = "/v2/"
"""The path whose challenge names a backend's token realm."""
_REALM = re.compile(r'(\brealm\s*=\s*)"([^"]*)"', re.IGNORECASE)


def is_registry_location(location: str) -> bool:
    """True when a redirect points at the registry API (``/v2`` or ``/v2/...``)."""
    path = urlsplit(location).path
    return path == "/v2" or path.startswith("/v2/")


def followed_target(status: int, location: str, url: str) -> str | None:
    """The absolute URL the gateway asks next when the answer ``status`` with ``location``
    to a request for ``url`` is a registry redirect; ``None`` when it is relayed."""
    if status in FOLLOWED_STATUSES and is_registry_location(location):
        return urljoin(url, location)
    return None


def same_host(first: str, second: str) -> bool:
    """True when both URLs name the same host and port (credentials may be re-sent)."""
    return urlsplit(first).netloc == urlsplit(second).netloc


def public_location(value: bytes, backend: str) -> bytes:
    """A relayed ``Location``: a path is made absolute on the public ``backend``."""
    text = value.decode("latin-1").strip()
    if text.startswith("/"):
        return f"https://{backend}{text}".encode("latin-1")
    return value


def bearer_realm(challenge: str) -> str | None:
    """The ``realm`` of a ``Bearer`` ``WWW-Authenticate`` challenge, else ``None``."""
    if not challenge.strip().lower().startswith("bearer"):
        return None
    found = _REALM.search(challenge)
    return found.group(2) if found else None


def replace_realm(challenge: str, realm: str) -> str:
    """``challenge`` with its (quoted) realm parameter set to ``realm``."""
    return _REALM.sub(lambda m: f'{m.group(1)}"{realm}"', challenge, count=1)


def token_url(realm: str, raw_query: str | None) -> str:
    """The backend's realm with the client's token query appended."""
    if not raw_query:
        return realm
    return realm + ("&" if "?" in realm else "?") + raw_query



class TokenRealms:
    """The real token realm of each backend whose realm the gateway rewrites."""

    def __init__(self) -> None:
        self._realms: dict[str, str] = {}

    def known(self, backend: str) -> str | None:
        """The realm learned for ``backend`` so far."""
        return self._realms.get(backend)

    def learn(self, backend: str, challenges: Iterable[bytes]) -> str | None:
        """Remember the realm of the first Bearer challenge among ``challenges``."""
        for challenge in challenges:
            realm = bearer_realm(challenge.decode("latin-1"))
            if realm is not None:
                self._realms[backend] = realm
                return realm
        return None

    def own_challenge(self, value: bytes, backend: str, public_origin: str) -> bytes:
        """Point a Bearer challenge at the gateway's token endpoint (``public_origin`` is
        ``scheme://host[:port]`` as the client sees the gateway); remember the real realm."""
        challenge = value.decode("latin-1")
        realm = bearer_realm(challenge)
        if realm is None:
            return value
        self._realms[backend] = realm
        return replace_realm(challenge, public_origin + token_path(backend)).encode("latin-1")
