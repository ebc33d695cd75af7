"""SNI context selection, the fallback certificate, TLS-ALPN-01 and the ClientHello peek,
with in-memory pyOpenSSL handshakes."""

from __future__ import annotations

import contextlib
import ssl

import pytest
from cryptography import x509
from OpenSSL import SSL

from scarfgw.tls.certs import ACME_IDENTIFIER_OID, alpn_challenge_cert, self_signed
from scarfgw.tls.hello import offered_alpn
from scarfgw.tls.sni import SNIServerOptions


def _step(conn: SSL.Connection) -> None:
    with contextlib.suppress(SSL.WantReadError):
        conn.do_handshake()


def _client_bytes(client: SSL.Connection) -> bytes:
    try:
        return client.bio_read(65536)
    except SSL.WantReadError:
        return b""


def handshake(options: SNIServerOptions, name: bytes | None, alpn: list[bytes],
              max_version: int | None = None) -> SSL.Connection:
    """Run a full handshake in memory (a pyOpenSSL client, the listener's stdlib server
    connection); the server sees the peeked ALPN offer like the listener."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    if name is not None:
        client.set_tlsext_host_name(name)
    client.set_alpn_protos(alpn)
    _step(client)
    hello = _client_bytes(client)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = options.connection(incoming, outgoing, offered_alpn(hello) or ())
    incoming.write(hello)
    for _ in range(6):
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        client.bio_write(outgoing.read()) if outgoing.pending else None
        _step(client)
        incoming.write(_client_bytes(client))
    return client


def served(client: SSL.Connection) -> x509.Certificate:
    cert = client.get_peer_certificate(as_cryptography=True)
    assert cert is not None
    return cert


@pytest.fixture
def options() -> SNIServerOptions:
    return SNIServerOptions(self_signed("fallback.invalid", 0, 10**9))


def test_each_name_gets_its_own_certificate_and_unknown_names_the_fallback(options):
    a, b = self_signed("a.test", 0, 10**9), self_signed("b.test", 0, 10**9)
    options.install("a.test", a)
    options.install("b.test", b)
    assert served(handshake(options, b"a.test", [b"http/1.1"])) == a.leaf
    assert served(handshake(options, b"B.TEST", [b"http/1.1"])) == b.leaf
    for name in (b"c.test", None):
        cert = served(handshake(options, name, [b"http/1.1"]))
        assert cert.subject.rfc4514_string() == "CN=fallback.invalid"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_alpn_negotiates_http11_only_and_tls_below_12_is_refused(options):
    options.install("a.test", self_signed("a.test", 0, 10**9))
    client = handshake(options, b"a.test", [b"h2", b"http/1.1"])
    assert client.get_alpn_proto_negotiated() == b"http/1.1"
    assert client.get_protocol_version_name() in ("TLSv1.2", "TLSv1.3")
    assert handshake(options, b"a.test", [b"h2"]).get_alpn_proto_negotiated() == b""
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    old_client = old.wrap_bio(to_client, to_server, server_hostname="a.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        old_client.do_handshake()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = options.connection(incoming, outgoing, ())
    incoming.write(to_server.read())
    with pytest.raises(ssl.SSLError, match=r"UNSUPPORTED_PROTOCOL|VERSION"):
        server.do_handshake()


@pytest.mark.parametrize(("version", "cipher"), [
    (SSL.TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256"),
    (SSL.TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256"),
])
def test_aes_128_gcm_is_preferred_over_the_clients_order(options, version, cipher):
    options.install("a.test", self_signed("a.test", 0, 10**9))
    client = handshake(options, b"a.test", [b"http/1.1"], version)
    assert client.get_cipher_name() == cipher  # OpenSSL's clients list AES-256-GCM first


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_challenge_certificate_goes_only_to_acme_tls_clients(options, version):
    real = self_signed("a.test", 0, 10**9)
    options.install("a.test", real)
    options.add_challenge("a.test", alpn_challenge_cert("a.test", "tok.thumb", 0))
    validator = handshake(options, b"a.test", [b"acme-tls/1"], max_version=version)
    assert validator.get_alpn_proto_negotiated() == b"acme-tls/1"
    extension = served(validator).extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert extension.critical
    browser = handshake(options, b"a.test", [b"http/1.1"], max_version=version)
    assert served(browser) == real.leaf
    options.remove_challenge("a.test")
    assert served(handshake(options, b"a.test", [b"acme-tls/1"])) == real.leaf


def test_removed_domain_falls_back(options):
    options.install("a.test", self_signed("a.test", 0, 10**9))
    options.remove("a.test")
    assert not options.has("a.test")
    cert = served(handshake(options, b"a.test", [b"http/1.1"]))
    assert cert.subject.rfc4514_string() == "CN=fallback.invalid"


def test_hello_peek_needs_the_whole_record_and_ignores_non_tls():
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    client.set_tlsext_host_name(b"a.test")
    client.set_alpn_protos([b"acme-tls/1", b"http/1.1"])
    _step(client)
    hello = client.bio_read(65536)
    assert offered_alpn(hello) == (b"acme-tls/1", b"http/1.1")
    assert offered_alpn(hello[:40]) is None
    assert offered_alpn(b"GET / HTTP/1.1\r\n") == ()
