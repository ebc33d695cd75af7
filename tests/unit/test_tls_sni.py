"""SNI context selection, the fallback certificate, TLS-ALPN-01 and the ClientHello peek,
with in-memory pyOpenSSL handshakes."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
from cryptography import x509
from OpenSSL import SSL

from scarfgw.tls.certs import ACME_IDENTIFIER_OID, alpn_challenge_cert, self_signed
from scarfgw.tls.hello import offered_alpn
from scarfgw.tls.sni import SNIServerOptions


def _pump(source: SSL.Connection, sink: SSL.Connection) -> bytes:
    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return b""
    sink.bio_write(data)
    return data


def _step(conn: SSL.Connection) -> None:
    with contextlib.suppress(SSL.WantReadError):
        conn.do_handshake()


def handshake(options: SNIServerOptions, name: bytes | None, alpn: list[bytes],
              max_version: int | None = None) -> SSL.Connection:
    """Run a full handshake in memory; the server sees the peeked ALPN offer like the listener."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    if name is not None:
        client.set_tlsext_host_name(name)
    client.set_alpn_protos(alpn)
    server = options.serverConnectionForTLS(None)
    server.set_accept_state()
    peeked = SimpleNamespace(offered_protocols=())
    server.set_app_data(peeked)
    _step(client)
    hello = _pump(client, server)
    peeked.offered_protocols = offered_alpn(hello) or ()
    for _ in range(6):
        _step(server)
        _pump(server, client)
        _step(client)
        _pump(client, server)
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


def test_alpn_negotiates_http11_only_and_tls_below_12_is_refused(options):
    options.install("a.test", self_signed("a.test", 0, 10**9))
    client = handshake(options, b"a.test", [b"h2", b"http/1.1"])
    assert client.get_alpn_proto_negotiated() == b"http/1.1"
    assert client.get_protocol_version_name() in ("TLSv1.2", "TLSv1.3")
    assert handshake(options, b"a.test", [b"h2"]).get_alpn_proto_negotiated() == b""
    with pytest.raises(SSL.Error):
        handshake(options, b"a.test", [b"http/1.1"], max_version=SSL.TLS1_1_VERSION)


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
