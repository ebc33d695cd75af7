"""Operator-provided certificates (``tls.certificates``): each pair is read, checked (the
key matches the leaf) and described by the DNS names it covers, wildcards included.

They are served ahead of ACME for every name they cover, and no ACME order is placed for
such a name. The files are read with the config (by the primary process only), so a SIGHUP
re-reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scarfgw.tls.certs import KeyedChain, PemFile


class OwnCertificateError(ValueError):
    """A pair is unusable; ``path`` names the file at fault."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class OwnCertificate:
    """One operator certificate: its files, their checked PEM content and the names the
    certificate covers. Plain bytes and strings, so a config snapshot holding it can be
    compared, copied and sent to another process."""

    cert_path: str
    key_path: str
    chain_pem: bytes
    key_pem: bytes
    names: frozenset[str]
    not_after: float

    def keyed(self) -> KeyedChain:
        """The key and chain, parsed (they were checked when the files were read)."""
        return _parse(self.cert_path, self.chain_pem, self.key_path, self.key_pem)

    def covers(self, domain: str) -> bool:
        """True when ``domain`` (lower case, no trailing dot) is a name of the certificate or
        matches one of its wildcards (``*.example.com`` covers exactly one more label)."""
        if domain in self.names:
            return True
        _, dot, parent = domain.partition(".")
        return bool(dot) and f"*.{parent}" in self.names


def _dns_names(leaf: x509.Certificate) -> frozenset[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName))


def load_own_certificate(cert: PemFile, key: PemFile) -> OwnCertificate:
    """Check one pair as read: a PEM chain (leaf first) and its unencrypted PEM key."""
    keyed = _parse(cert.path, cert.pem, key.path, key.pem)
    names = _dns_names(keyed.leaf)
    if not names:
        raise OwnCertificateError(cert.path, "names no DNS name (subjectAltName)")
    return OwnCertificate(cert.path, key.path, cert.pem, key.pem, names, keyed.not_after)


def _parse(cert_path: str, cert_data: bytes, key_path: str, key_data: bytes) -> KeyedChain:
    try:
        chain = tuple(x509.load_pem_x509_certificates(cert_data))
    except ValueError:
        raise OwnCertificateError(cert_path, "holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise OwnCertificateError(key_path, f"not an unencrypted PEM private key ({exc})"
                                  ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise OwnCertificateError(key_path, f"expected an RSA or EC key, got {type(key).__name__}")
    if chain[0].public_key() != key.public_key():
        raise OwnCertificateError(cert_path, f"does not match the private key in {key_path}")
    return KeyedChain(key, chain)


def covering(certificates: Sequence[OwnCertificate], domain: str) -> OwnCertificate | None:
    """The first certificate (in config order) covering ``domain``, or None."""
    return next((cert for cert in certificates if cert.covers(domain)), None)


def uncovered(certificates: Sequence[OwnCertificate], domains: Iterable[str]) -> frozenset[str]:
    """The ``domains`` no operator certificate covers: those ACME has to serve."""
    return frozenset(domain for domain in domains if covering(certificates, domain) is None)
