"""Keys, certificates and locks on disk, shared safely by instances using the same directory.

Layout under the storage root::

    accounts/<issuer>.key                   ACME account key (0600), created once
    certificates/<domain>/privkey.pem       certificate key (0600)
    certificates/<domain>/fullchain.pem     leaf + intermediates
    locks/<domain>.lock                     {"owner", "updated"}: held while ordering
    challenges/<kind>/<token or domain>     pending key authorizations, so that every process
                                            sharing the storage can answer a validation

Every file is written to a temporary name and renamed into place. A lock is refreshed by its
holder and considered abandoned once it has not been refreshed for ``stale_after`` seconds
(certmagic's file-system locking).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.interfaces import IReactorTime

from scarfgw.tls.certs import KeyedChain, key_pem, load_key, load_keyed_chain, new_key

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
KEY_FILE = "privkey.pem"
CHAIN_FILE = "fullchain.pem"


def issuer_slug(directory_url: str) -> str:
    """A file-name-safe name for an ACME directory URL."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", directory_url.split("://", 1)[-1]).strip("-")


def _checked(domain: str) -> str:
    if not _DOMAIN.match(domain):
        raise ValueError(f"not a storable domain name: {domain!r}")
    return domain


def _temporary(directory: Path, data: bytes, mode: int) -> str:
    """Write ``data`` to a new temporary file in ``directory`` and return its path."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` in one rename."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.replace(_temporary(path.parent, data, mode), path)


def create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` unless it exists (atomic: readers never see it partial)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = _temporary(path.parent, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


class CertStore:
    """The ``tls.storage`` directory of one instance (``owner`` names it in lock files)."""

    def __init__(self, root: str, clock: IReactorTime, owner: str,
                 stale_after: float = 10.0) -> None:
        self.root = Path(root)
        self.clock = clock
        self.owner = owner
        self.stale_after = stale_after

    def account_key(self, directory_url: str) -> ec.EllipticCurvePrivateKey:
        """The account key for this CA, created on first use and reused ever after."""
        path = self.root / "accounts" / f"{issuer_slug(directory_url)}.key"
        if not path.exists():
            create_exclusive(path, key_pem(new_key()), 0o600)
        return load_key(path.read_bytes())

    def load(self, domain: str) -> KeyedChain | None:
        """The stored key and chain of ``domain``; None if there is none (ValueError if bad)."""
        folder = self.root / "certificates" / _checked(domain)
        try:
            key_data = (folder / KEY_FILE).read_bytes()
            chain_data = (folder / CHAIN_FILE).read_bytes()
        except FileNotFoundError:
            return None
        return load_keyed_chain(key_data, chain_data)

    def save(self, domain: str, keyed: KeyedChain) -> None:
        """Store the key (0600) and then the chain of ``domain``."""
        folder = self.root / "certificates" / _checked(domain)
        write_atomic(folder / KEY_FILE, key_pem(keyed.key), 0o600)
        write_atomic(folder / CHAIN_FILE, keyed.chain_pem(), 0o644)

    def _challenge_path(self, kind: str, name: str) -> Path:
        checked = name if _TOKEN.match(name) else _checked(name)
        return self.root / "challenges" / kind / checked

    def save_challenge(self, kind: str, name: str, key_authorization: str) -> None:
        """Publish a pending key authorization (HTTP-01 by token, TLS-ALPN-01 by domain)."""
        write_atomic(self._challenge_path(kind, name), key_authorization.encode("ascii"), 0o644)

    def load_challenge(self, kind: str, name: str) -> str | None:
        """A pending key authorization, or None (also for names that cannot be stored)."""
        try:
            return self._challenge_path(kind, name).read_bytes().decode("ascii")
        except (OSError, ValueError):
            return None

    def remove_challenge(self, kind: str, name: str) -> None:
        """Withdraw a published key authorization."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._challenge_path(kind, name).unlink()

    def _lock_path(self, domain: str) -> Path:
        return self.root / "locks" / f"{_checked(domain)}.lock"

    def _lock_record(self) -> bytes:
        return json.dumps({"owner": self.owner, "updated": self.clock.seconds()}).encode()

    def _holder(self, path: Path) -> tuple[str, float] | None:
        """Owner and last refresh of the lock at ``path``; None when it is gone."""
        try:
            record = json.loads(path.read_bytes())
            return str(record["owner"]), float(record["updated"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return "", 0.0

    def try_lock(self, domain: str) -> bool:
        """Take the lock of ``domain`` unless another live instance holds it."""
        path = self._lock_path(domain)
        for _ in range(2):
            if create_exclusive(path, self._lock_record(), 0o644):
                return True
            holder = self._holder(path)
            if holder is not None and self.clock.seconds() - holder[1] <= self.stale_after:
                return False
            if holder is not None and not self._remove_stale(path, holder):
                return False
        return False

    def _remove_stale(self, path: Path, stale: tuple[str, float]) -> bool:
        """Remove the abandoned lock ``stale`` at ``path``, compare-and-swap style.

        The lock is renamed to a name of our own (of several instances, one rename wins) and
        removed only if it is still the record judged stale; a lock another instance took in
        the meantime is put back.
        """
        claimed = path.with_name(f"{path.name}.{self.owner}.stale")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return True
        if self._holder(claimed) == stale:
            claimed.unlink(missing_ok=True)
            return True
        with contextlib.suppress(FileExistsError):
            os.link(claimed, path)
        claimed.unlink(missing_ok=True)
        return False

    def refresh_lock(self, domain: str) -> None:
        """Mark our lock of ``domain`` as alive."""
        path = self._lock_path(domain)
        holder = self._holder(path)
        if holder is not None and holder[0] == self.owner:
            write_atomic(path, self._lock_record(), 0o644)

    def unlock(self, domain: str) -> None:
        """Release our lock of ``domain`` (someone else's is left alone)."""
        path = self._lock_path(domain)
        holder = self._holder(path)
        if holder is not None and holder[0] == self.owner:
            path.unlink(missing_ok=True)
