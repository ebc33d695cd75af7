"""One OpenSSL context per server name, picked in the SNI callback.

Operator certificates (``tls.certificates``) come first for every name they cover; unknown
names (and clients without SNI) get a self-signed fallback certificate, never another
domain's. A pending TLS-ALPN-01 challenge certificate is served only to clients
offering ``acme-tls/1``; everyone else keeps getting the domain's real certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from scarfgw.tls.certs import KeyedChain
from scarfgw.tls.owncerts import OwnCertificate

HTTP_1_1 = b"http/1.1"
ACME_TLS_1 = b"acme-tls/1"
CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"
_OPTIONS = (
    SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION
    | SSL.OP_NO_TICKET
)


def _alpn_selector(protocol: bytes) -> Any:
    def select(_conn: SSL.Connection, offered: Sequence[bytes]) -> Any:
        return protocol if protocol in offered else SSL.NO_OVERLAPPING_PROTOCOLS
    return select


def build_context(keyed: KeyedChain, protocol: bytes = HTTP_1_1) -> SSL.Context:
    """A TLS 1.2+ server context serving ``keyed`` and negotiating ALPN ``protocol``."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(_OPTIONS)
    ctx.set_cipher_list(CIPHERS)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.use_certificate(keyed.leaf)
    ctx.use_privatekey(keyed.key)
    for cert in keyed.chain[1:]:
        ctx.add_extra_chain_cert(cert)
    ctx.check_privatekey()
    ctx.set_alpn_select_callback(_alpn_selector(protocol))
    return ctx


@implementer(IOpenSSLServerConnectionCreator)
class SNIServerOptions:
    """The https listener's connection creator; contexts are swapped in without a restart."""

    def __init__(self, fallback: KeyedChain,
                 challenge_source: Callable[[str], KeyedChain | None] | None = None) -> None:
        self._challenge_source = challenge_source
        self._default = build_context(fallback)
        self._default.set_tlsext_servername_callback(self._select)
        self._contexts: dict[str, SSL.Context] = {}
        self._challenges: dict[str, SSL.Context] = {}
        self._own: tuple[tuple[OwnCertificate, SSL.Context], ...] = ()

    def use_own(self, certificates: Sequence[OwnCertificate]) -> None:
        """Serve the operator's ``certificates`` (in order) ahead of installed ones."""
        self._own = tuple((cert, build_context(cert.keyed())) for cert in certificates)

    def _own_context(self, domain: str) -> SSL.Context | None:
        return next((context for cert, context in self._own if cert.covers(domain)), None)

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        """A connection starting on the fallback context; SNI switches it."""
        return SSL.Connection(self._default, None)

    def install(self, domain: str, keyed: KeyedChain) -> None:
        """Serve ``keyed`` to new connections for ``domain`` (open ones keep theirs)."""
        self._contexts[domain] = build_context(keyed)

    def remove(self, domain: str) -> None:
        """Stop serving ``domain`` (it falls back to the self-signed certificate)."""
        self._contexts.pop(domain, None)
        self._challenges.pop(domain, None)

    def has(self, domain: str) -> bool:
        """True when ``domain`` has an installed or operator certificate."""
        return domain in self._contexts or self._own_context(domain) is not None

    def add_challenge(self, domain: str, keyed: KeyedChain) -> None:
        """Answer TLS-ALPN-01 for ``domain`` with the RFC 8737 certificate ``keyed``."""
        self._challenges[domain] = build_context(keyed, ACME_TLS_1)

    def remove_challenge(self, domain: str) -> None:
        """Forget the challenge certificate of ``domain``."""
        self._challenges.pop(domain, None)

    def _shared_challenge(self, domain: str) -> SSL.Context | None:
        """A challenge another process published (only asked for by ACME validators)."""
        keyed = self._challenge_source(domain) if self._challenge_source else None
        return build_context(keyed, ACME_TLS_1) if keyed is not None else None

    def _select(self, conn: SSL.Connection) -> None:
        name = conn.get_servername()
        if not name:
            return
        domain = name.decode("ascii", "replace").lower().rstrip(".")
        offered = getattr(conn.get_app_data(), "offered_protocols", ())
        if ACME_TLS_1 in offered:
            challenge = self._challenges.get(domain) or self._shared_challenge(domain)
            if challenge is not None:
                conn.set_context(challenge)
                return
        context = self._own_context(domain) or self._contexts.get(domain)
        if context is not None:
            conn.set_context(context)
