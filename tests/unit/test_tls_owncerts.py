"""Operator certificates (``tls.certificates``): loading and checking the pairs, the names a
certificate covers, SNI serving them ahead of ACME, and no ACME order for covered names."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from zope.interface import provider

from scarfgw.config import ConfigError, parse_config
from scarfgw.ops.metrics import REGISTRY
from scarfgw.tls.certs import PemFile, self_signed
from scarfgw.tls.manager import TLSService
from scarfgw.tls.owncerts import load_own_certificate
from scarfgw.tls.settings import TLSConfig, VerificationConfig
from scarfgw.tls.sni import SNIServerOptions
from tests.support import write_tls_pair
from tests.unit.test_tls_manager import FakeIssuer
from tests.unit.test_tls_sni import handshake, served


def write_pair(folder: Path, *names: str, key_type: trustme.KeyType = trustme.KeyType.ECDSA
               ) -> tuple[Path, Path]:
    """A certificate for ``names`` from a new CA and its key, as PEM files in ``folder``."""
    cert, key = folder / f"{names[0].replace('*', 'star')}.pem", folder / f"{names[0]}.key"
    write_tls_pair(trustme.CA(key_type=key_type), cert, key, *names, key_type=key_type)
    return cert, key


def pem(path: Path) -> PemFile:
    """The file at ``path``, read."""
    return PemFile(str(path), path.read_bytes())


@pytest.mark.parametrize("key_type", [trustme.KeyType.ECDSA, trustme.KeyType.RSA])
def test_a_wildcard_covers_one_label_and_named_hosts(tmp_path, key_type):
    cert, key = write_pair(tmp_path, "*.example.test", "example.test", key_type=key_type)
    own = load_own_certificate(pem(cert), pem(key))
    assert own.names == {"*.example.test", "example.test"}
    assert own.covers("cr.example.test") and own.covers("example.test")
    assert not own.covers("a.b.example.test") and not own.covers("other.test")
    assert pickle.loads(pickle.dumps(own)) == own, "a config snapshot can go to a worker"


def _load(tmp_path, pairs):
    return parse_config({"tls": {"certificates": pairs}}, str(tmp_path / "gw.yaml"))


def test_missing_or_mismatched_pairs_are_config_errors_naming_the_file(tmp_path):
    cert, key = write_pair(tmp_path, "a.test")
    _, other_key = write_pair(tmp_path, "b.test")
    missing = tmp_path / "missing.pem"
    cases = [
        ({"cert": str(missing), "key": str(key)},
         f"tls.certificates[0]: {missing}: cannot read: No such file or directory"),
        ({"cert": str(cert), "key": str(other_key)},
         f"tls.certificates[0]: {cert}: does not match the private key in {other_key}"),
        ({"cert": str(key), "key": str(key)}, f"tls.certificates[0]: {key}: holds no PEM"),
        ({"cert": str(cert)}, "tls.certificates[0].key: required key is missing"),
    ]
    for pair, message in cases:
        with pytest.raises(ConfigError) as error:
            _load(tmp_path, [pair])
        assert str(error.value).startswith(f"{tmp_path / 'gw.yaml'}: {message}")


def test_sni_serves_operator_certificates_ahead_of_installed_ones(tmp_path):
    cert, key = write_pair(tmp_path, "*.example.test")
    own = load_own_certificate(pem(cert), pem(key))
    options = SNIServerOptions(self_signed("fallback.invalid", 0, 10**9))
    options.install("cr.example.test", self_signed("cr.example.test", 0, 10**9))
    options.install("other.test", acme := self_signed("other.test", 0, 10**9))
    options.use_own([own])
    assert served(handshake(options, b"cr.example.test", [b"http/1.1"])) == own.keyed().leaf
    assert served(handshake(options, b"new.example.test", [b"http/1.1"])) == own.keyed().leaf
    assert served(handshake(options, b"other.test", [b"http/1.1"])) == acme.leaf
    assert options.has("new.example.test")
    options.use_own([])
    assert not options.has("new.example.test")


def test_no_acme_order_for_covered_names_until_a_reload_drops_the_certificate(tmp_path):
    cert, key = write_pair(tmp_path, "*.example.test")
    config = TLSConfig(storage=str(tmp_path / "tls"), verification=VerificationConfig("none"),
                       certificates=(load_own_certificate(pem(cert), pem(key)),))
    clock = Clock()
    issuer = FakeIssuer(clock, 90 * 86400)
    domains = frozenset({"cr.example.test", "get.other.test"})
    service = TLSService(clock, config, domains, clock=clock, issuer=issuer)
    service.startService()
    clock.advance(1)
    assert issuer.calls == ["get.other.test"]
    assert service.has_certificate("cr.example.test")
    service.use_certificates(())
    service.set_domains(domains)
    clock.advance(1)
    assert issuer.calls == ["get.other.test", "cr.example.test"]
    service.stopService()


def test_operator_certificates_are_in_the_expiry_metric_and_an_expired_one_is_warned(tmp_path):
    cert, key = write_pair(tmp_path, "*.example.test")
    own = load_own_certificate(pem(cert), pem(key))
    config = TLSConfig(storage=str(tmp_path / "tls"), verification=VerificationConfig("none"),
                       certificates=(own,))
    clock = Clock()
    clock.advance(own.not_after + 1)
    logged: list[str] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn:
            logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        service = TLSService(clock, config, frozenset({"cr.example.test", "get.other.test"}),
                             clock=clock, issuer=FakeIssuer(clock, 90 * 86400))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert service.not_after() == {"cr.example.test": own.not_after}
    assert len(logged) == 1 and str(cert) in logged[0] and "expired" in logged[0]
    service.startService()
    try:
        [family] = [f for f in text_string_to_metric_families(generate_latest(REGISTRY).decode())
                    if f.name == "scarfgw_tls_certificate_not_after_timestamp_seconds"]
        samples = {sample.labels["domain"]: sample.value for sample in family.samples}
        assert samples["cr.example.test"] == own.not_after
    finally:
        service.stopService()
