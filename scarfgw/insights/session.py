"""Dashboard sessions: the token a maintainer signed in with, sealed in a cookie.

The cookie holds the token encrypted and authenticated with Fernet (``cryptography``) under a
key made at start-up, and expires after ``SESSION_SECONDS``. Every request unseals it and asks
the configured tokens again, so a tampered or stale cookie is refused and a token removed from
the config (on reload) stops working at once. The cookie is HttpOnly and SameSite=Strict, and
Secure when the dashboard was reached over HTTPS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from cryptography.fernet import Fernet, InvalidToken

from scarfgw.insights.model import Grant

COOKIE: Final = b"scarfgw_session"
SESSION_SECONDS: Final = 12 * 3600
_MAX_COOKIE: Final = 2048

Authenticate = Callable[[str], Grant | None]
"""A presented token's grant, or None (``insights.tokens.Tokens.grant``)."""


class Sessions:
    """Seals tokens into cookie values and opens them again."""

    def __init__(self, authenticate: Authenticate, clock: object,
                 key: bytes | None = None) -> None:
        self.authenticate = authenticate
        self.clock = clock
        self._fernet = Fernet(key or Fernet.generate_key())

    def _now(self) -> int:
        return int(self.clock.seconds())  # type: ignore[attr-defined]

    def seal(self, token: str) -> bytes:
        """The cookie value for a signed-in ``token``."""
        return self._fernet.encrypt_at_time(token.encode("utf-8"), self._now())

    def grant(self, cookie: bytes | None) -> Grant | None:
        """The grant of the session in ``cookie``; None when absent, tampered with, expired
        or for a token the config no longer has."""
        if not cookie or len(cookie) > _MAX_COOKIE:
            return None
        try:
            token = self._fernet.decrypt_at_time(cookie, SESSION_SECONDS, self._now())
        except InvalidToken:
            return None
        return self.authenticate(token.decode("utf-8", "replace"))

    @staticmethod
    def cookie_header(value: bytes, secure: bool) -> bytes:
        """The ``Set-Cookie`` value that stores ``value`` (empty: signs out)."""
        max_age = SESSION_SECONDS if value else 0
        return (COOKIE + b"=" + value + b"; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict"
                % max_age + (b"; Secure" if secure else b""))
