"""The typed TLS settings (the ``tls`` section): certificate storage, the ACME CA,
ownership verification and the operator's own certificates; built by :mod:`scarfgw.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scarfgw.tls.certs import PemFile
from scarfgw.tls.owncerts import OwnCertificate


@dataclass(frozen=True)
class AcmeConfig:
    """The ACME CA scarfgw orders certificates from."""

    directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    contact: str | None = None
    ca_bundle: PemFile | None = None
    challenge: str = "http-01"


@dataclass(frozen=True)
class VerificationConfig:
    """How domain ownership is proved before any certificate order."""

    mode: str = "txt"
    secret: str | None = None
    resolver: str | None = None


@dataclass(frozen=True)
class TLSConfig:
    """Certificate storage, ACME and ownership verification."""

    storage: str = "var/tls"
    session_tickets: bool = True
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    # Operator certificates; a reload applies them, so they never ask for a restart.
    certificates: tuple[OwnCertificate, ...] = field(default=(), compare=False)
