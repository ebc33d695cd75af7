"""One ``ssl.SSLContext`` per server name, picked in the SNI callback.

Operator certificates (``tls.certificates``) come first for every name they cover; unknown
names (and clients without SNI) get a self-signed fallback certificate, never another
domain's; a name without a context is first offered to ``load_missing`` (which installs a
certificate another process stored meanwhile). A pending TLS-ALPN-01 challenge certificate
is served only to clients offering ``acme-tls/1``; everyone else keeps getting the domain's
real certificate.

Sessions are resumed from tickets only (no server-side cache): OpenSSL encrypts and
decrypts tickets with the connection's first context, the fallback's, whatever name is
picked, so the ticket keys (:mod:`scarfgw.tls.tickets`, shared through ``tls.storage``) are
set on that one. The contexts are the stdlib's, on the system OpenSSL, because the ticket
keys are set by ctypes on the same libssl (:mod:`scarfgw.tls.native`).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Sequence

from twisted.logger import Logger

from scarfgw.rules.request import normalize_domain
from scarfgw.tls import native
from scarfgw.tls.certs import KeyedChain, key_pem
from scarfgw.tls.owncerts import OwnCertificate, covering

log = Logger()

HTTP_1_1 = b"http/1.1"
ACME_TLS_1 = b"acme-tls/1"
CIPHERS = "ECDHE+AESGCM+AES128:ECDHE+CHACHA20:ECDHE+AESGCM"
TLS13_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
"""AES-128-GCM first, as Go and the browsers prefer it: its SHA-256 key schedule costs a
handshake less than AES-256-GCM's SHA-384 (SHA-256 has CPU instructions of its own)."""
TICKETS_PER_HANDSHAKE = 1
_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION


class PeekedSSLObject(ssl.SSLObject):
    """A server-side TLS connection that knows the ALPN offer of its ClientHello (read by
    the listener before OpenSSL sees it), for the SNI callback."""

    offered_protocols: tuple[bytes, ...] = ()


def _load_chain(ctx: ssl.SSLContext, keyed: KeyedChain) -> None:
    """Load key and chain from memory (an anonymous memfd: the key never touches a disk)."""
    fd = os.memfd_create("scarfgw-chain", os.MFD_CLOEXEC)
    try:
        os.write(fd, keyed.chain_pem() + key_pem(keyed.key))
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def build_context(keyed: KeyedChain, protocol: bytes = HTTP_1_1) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving ``keyed`` and negotiating ALPN ``protocol``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= _OPTIONS
    ctx.set_ciphers(CIPHERS)
    try:
        native.set_tls13_ciphersuites(ctx, TLS13_CIPHERSUITES)
    except native.NativeError as exc:  # served in OpenSSL's order (AES-256 first) instead
        log.warn("TLS 1.3 cipher suite preference not applied: {error}", error=exc)
    _load_chain(ctx, keyed)
    ctx.set_alpn_protocols([protocol.decode("ascii")])
    ctx.sslobject_class = PeekedSSLObject
    return ctx


class SNIServerOptions:
    """The https listener's contexts; certificates are swapped in without a restart.

    ``tickets`` gives the session-ticket keys (``None``: no session resumption at all).
    """

    def __init__(self, fallback: KeyedChain,
                 challenge_source: Callable[[str], KeyedChain | None] | None = None,
                 load_missing: Callable[[str], None] | None = None,
                 tickets: native.KeySource | None = None) -> None:
        self._challenge_source = challenge_source
        self._load_missing = load_missing
        self._default = build_context(fallback)
        self._default.sni_callback = self._select
        self._ticket_callback = self._resumption(tickets)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._challenges: dict[str, ssl.SSLContext] = {}
        self._own: tuple[OwnCertificate, ...] = ()
        self._own_contexts: dict[OwnCertificate, ssl.SSLContext] = {}

    def use_own(self, certificates: Sequence[OwnCertificate]) -> None:
        """Serve the operator's ``certificates`` (in order) ahead of installed ones."""
        self._own = tuple(certificates)
        self._own_contexts = {cert: build_context(cert.keyed()) for cert in certificates}

    def _own_context(self, domain: str) -> ssl.SSLContext | None:
        if not self._own:
            return None
        cert = covering(self._own, domain)
        return None if cert is None else self._own_contexts[cert]

    def _resumption(self, tickets: native.KeySource | None) -> object:
        """Set up tickets on the first context, or switch resumption off."""
        ctx = self._default
        try:
            native.disable_session_cache(ctx)
            if tickets is not None:
                ctx.num_tickets = TICKETS_PER_HANDSHAKE
                return native.set_ticket_keys(ctx, tickets)
        except native.NativeError as exc:
            log.error("TLS session resumption off: {error}", error=str(exc))
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
        return None

    @property
    def resumes(self) -> bool:
        """True when sessions are resumed from shared tickets."""
        return self._ticket_callback is not None

    def connection(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                   offered_protocols: tuple[bytes, ...]) -> PeekedSSLObject:
        """A server connection starting on the fallback context; SNI switches it."""
        conn = self._default.wrap_bio(incoming, outgoing, server_side=True)
        assert isinstance(conn, PeekedSSLObject)
        conn.offered_protocols = offered_protocols
        return conn

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

    def _shared_challenge(self, domain: str) -> ssl.SSLContext | None:
        """A challenge another process published (only asked for by ACME validators)."""
        keyed = self._challenge_source(domain) if self._challenge_source else None
        return build_context(keyed, ACME_TLS_1) if keyed is not None else None

    def _select(self, conn: ssl.SSLObject | ssl.SSLSocket, name: str | None,
                _current: ssl.SSLContext) -> None:
        if not name:
            return
        domain = normalize_domain(name)
        if ACME_TLS_1 in getattr(conn, "offered_protocols", ()):
            challenge = self._challenges.get(domain) or self._shared_challenge(domain)
            if challenge is not None:
                conn.context = challenge
                return
        context = self._own_context(domain) or self._contexts.get(domain)
        if context is None and self._load_missing is not None:
            self._load_missing(domain)
            context = self._contexts.get(domain)
        if context is not None:
            conn.context = context
