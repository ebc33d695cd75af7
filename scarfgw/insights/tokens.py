"""API tokens: made at random, stored as SHA-256 hashes, checked in constant time.

A token is ``sgi_`` plus 32 random bytes in URL-safe base64; the config keeps only the hex
SHA-256 of the whole token text. :class:`Tokens` finds the grant of a presented token by
hashing it and comparing with every configured hash (``hmac.compare_digest``, no early
exit), so neither the answer time nor the log says which hashes exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

from scarfgw.insights.model import Grant
from scarfgw.insights.settings import TokenConfig

PREFIX = "sgi_"
_MAX_TOKEN_LENGTH = 512


def new_token() -> tuple[str, str]:
    """A new random token and its SHA-256 (hex), as the config wants it."""
    token = PREFIX + base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")
    return token, token_hash(token)


def token_hash(token: str) -> str:
    """The hex SHA-256 of ``token``'s UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Tokens:
    """The configured tokens; :meth:`grant` answers who a presented token is."""

    def __init__(self, tokens: Iterable[TokenConfig]) -> None:
        self.use(tokens)

    def use(self, tokens: Iterable[TokenConfig]) -> None:
        """Answer with ``tokens`` from now on (a reload): a removed token stops working."""
        self._tokens = tuple((bytes.fromhex(t.sha256), Grant(t.name, t.packages))
                             for t in tokens)

    def grant(self, token: str) -> Grant | None:
        """The grant of ``token``, or None for an unknown (or absurdly long) one."""
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: Grant | None = None
        for expected, grant in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = grant
        return found
