"""X.509 helpers: keys, PEM chains, the fallback certificate and the RFC 8737 challenge
certificate."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet import ssl

ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")

# ACME keys are EC; operator-provided certificates (tls.certificates) may be RSA too.
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class PemFile:
    """A PEM file the config names: its resolved path (for messages) and its content, read
    with the config (so every process uses the same bytes and none opens it again)."""

    path: str
    pem: bytes


@dataclass(frozen=True)
class KeyedChain:
    """A private key with its certificate chain (leaf first)."""

    key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        """The end-entity certificate."""
        return self.chain[0]

    @property
    def not_before(self) -> float:
        """Start of validity, Unix seconds."""
        return self.leaf.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        """End of validity, Unix seconds."""
        return self.leaf.not_valid_after_utc.timestamp()

    def chain_pem(self) -> bytes:
        """The chain as concatenated PEM."""
        return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in self.chain)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Parse a PEM EC private key (other key types are refused)."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"expected an EC private key, got {type(key).__name__}")
    return key


def load_keyed_chain(key_data: bytes, chain_data: bytes) -> KeyedChain:
    """Parse a key and its PEM chain; refuse a chain whose leaf does not match the key."""
    key = load_key(key_data)
    chain = tuple(x509.load_pem_x509_certificates(chain_data))
    if chain[0].public_key() != key.public_key():
        raise ValueError("certificate does not match its private key")
    return KeyedChain(key, chain)


def trust_root(ca_bundle: PemFile) -> Any:
    """Trust in every certificate of the PEM bundle ``ca_bundle`` (Twisted's
    ``Certificate.loadPEM`` would read only the first)."""
    pems = x509.load_pem_x509_certificates(ca_bundle.pem)
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(cert.public_bytes(serialization.Encoding.PEM)) for cert in pems]
    )


def self_signed(
    name: str, now: float, lifetime: float,
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> KeyedChain:
    """A self-signed certificate for ``name`` valid from ``now`` for ``lifetime`` seconds."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime.fromtimestamp(now, datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(seconds=lifetime))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    return KeyedChain(key, (builder.sign(key, hashes.SHA256()),))


def alpn_challenge_cert(domain: str, key_authorization: str, now: float) -> KeyedChain:
    """The RFC 8737 certificate: SAN = domain, critical acmeIdentifier = SHA-256(keyAuth)."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    extension = x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest)
    return self_signed(domain, now - 60, 7 * 86400, ((extension, True),))
