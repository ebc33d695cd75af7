"""Session-ticket keys shared through ``tls.storage`` by every process that uses it.

Time is cut into periods of :data:`ROTATION_SECONDS` (12 hours). The key of period ``N``
lives in ``tickets/N.key`` (0600, in a 0700 folder): 80 random bytes, the 16-byte key name,
the AES-256 key and the HMAC-SHA256 key. The first process that needs it creates it (an
atomic exclusive create, so concurrent processes agree on one key) and all others read it.
New tickets are encrypted under the current period's key; tickets under the previous
period's key (and under the next one, from an instance whose clock runs a little ahead) are
still accepted, so a ticket stays usable for 12 to 24 hours. Older files are removed. Keys
are never logged; a storage failure keeps the keys in memory, or a per-process key when
there are none yet, and is reported once.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Final

from twisted.logger import Logger

from scarfgw.tls.native import CIPHER_KEY_BYTES, KEY_NAME_BYTES, MAC_KEY_BYTES, TicketKey
from scarfgw.tls.store import create_exclusive

log = Logger()

TICKETS_FOLDER: Final = "tickets"
ROTATION_SECONDS: Final = 12 * 3600
RECHECK_SECONDS: Final = 300.0
"""How often the folder is read again within a period (a key another instance made early)."""
KEY_BYTES: Final = KEY_NAME_BYTES + CIPHER_KEY_BYTES + MAC_KEY_BYTES


def _parse(data: bytes) -> TicketKey:
    if len(data) != KEY_BYTES:
        raise ValueError(f"expected {KEY_BYTES} bytes, got {len(data)}")
    cipher_end = KEY_NAME_BYTES + CIPHER_KEY_BYTES
    return TicketKey(data[:KEY_NAME_BYTES], data[KEY_NAME_BYTES:cipher_end], data[cipher_end:])


class TicketKeys:
    """The ticket keys under ``folder`` (``tls.storage``/tickets), rotated on ``clock``."""

    def __init__(self, folder: Path, clock: Any) -> None:
        self.folder = folder
        self.clock = clock
        self._current: TicketKey | None = None
        self._known: dict[bytes, TicketKey] = {}
        self._next_check = 0.0
        self._failing = False

    def __call__(self) -> tuple[TicketKey, dict[bytes, TicketKey]]:
        """The key for new tickets and every accepted key by name (see ``native.KeySource``)."""
        now = self.clock.seconds()
        if now >= self._next_check or self._current is None:
            self.refresh(now)
        assert self._current is not None
        return self._current, self._known

    def refresh(self, now: float) -> None:
        """Read (creating the current one if needed) the keys of the periods around ``now``."""
        period = int(now // ROTATION_SECONDS)
        self._next_check = min(now + RECHECK_SECONDS, (period + 1) * ROTATION_SECONDS)
        try:
            current = self._load(period, create=True)
            assert current is not None
            known = {current.name: current}
            for other in (period - 1, period + 1):
                key = self._load(other, create=False)
                if key is not None:
                    known[key.name] = key
            self._prune(period - 1)
        except (OSError, ValueError) as exc:
            if not self._failing:
                log.error("session-ticket keys in {folder} unusable, tickets are per process "
                          "until this is fixed: {error}", folder=str(self.folder), error=exc)
            self._failing = True
            if self._current is None:
                self._current = _parse(os.urandom(KEY_BYTES))
                self._known = {self._current.name: self._current}
            return
        if self._failing:
            log.info("session-ticket keys in {folder} usable again", folder=str(self.folder))
        self._failing = False
        self._current, self._known = current, known

    def _path(self, period: int) -> Path:
        return self.folder / f"{period}.key"

    def _load(self, period: int, create: bool) -> TicketKey | None:
        path = self._path(period)
        if create and not path.exists():
            create_exclusive(path, os.urandom(KEY_BYTES), 0o600)
        try:
            return _parse(path.read_bytes())
        except FileNotFoundError:
            return None

    def _prune(self, oldest: int) -> None:
        """Remove the key files of periods before ``oldest``."""
        for path in self.folder.glob("*.key"):
            with contextlib.suppress(ValueError, OSError):
                if int(path.stem) < oldest:
                    path.unlink()
