"""The ACME client's transport rules: nonces, badNonce retry, problems, Retry-After, ARI ids."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from scarfgw.tls.acme import AcmeClient, AcmeProblem, ari_cert_id, retry_after_seconds
from scarfgw.tls.certs import new_key

DIRECTORY = "https://ca.test/dir"


@dataclass
class FakeResponse:
    code: int
    body: bytes = b""
    headers: Headers = field(default_factory=Headers)

    def content(self) -> defer.Deferred[bytes]:
        return defer.succeed(self.body)


class ScriptedCA:
    """Answers requests from a list of (method, url-suffix) -> response steps, in order."""

    def __init__(self, steps: list[tuple[str, str, FakeResponse]]) -> None:
        self.steps = steps
        self.seen: list[tuple[str, str, bytes | None]] = []

    def request(self, method: str, url: str, data: bytes | None = None, headers: Any = None,
                timeout: float | None = None) -> defer.Deferred[FakeResponse]:
        self.seen.append((method, url, data))
        expected_method, suffix, response = self.steps.pop(0)
        assert (method, url.endswith(suffix)) == (expected_method, True), (method, url)
        return defer.succeed(response)


def nonce(value: str, code: int = 200, body: bytes = b"", **extra: str) -> FakeResponse:
    headers = Headers({"replay-nonce": [value]})
    for name, header in extra.items():
        headers.setRawHeaders(name.replace("_", "-"), [header])
    return FakeResponse(code, body, headers)


def problem(kind: str) -> bytes:
    return json.dumps({"type": f"urn:ietf:params:acme:error:{kind}", "detail": kind}).encode()


DIR_BODY = json.dumps({"newNonce": "https://ca.test/nonce", "newAccount": "https://ca.test/acct",
                       "newOrder": "https://ca.test/order"}).encode()


def protected_nonce(jws_body: bytes) -> str:
    from josepy.b64 import b64decode

    protected = json.loads(b64decode(json.loads(jws_body)["protected"]))
    return str(protected["nonce"])


def run(coroutine: Any) -> Any:
    return defer.Deferred.fromCoroutine(coroutine)


def test_bad_nonce_is_retried_with_the_nonce_the_error_carried():
    ca = ScriptedCA([
        ("GET", "/dir", FakeResponse(200, DIR_BODY)),
        ("HEAD", "/nonce", nonce("AAAA")),
        ("POST", "/acct", nonce("BBBB", 400, problem("badNonce"))),
        ("POST", "/acct", nonce("CCCC", 201, b"{}", location="https://ca.test/acct/1")),
    ])
    client = AcmeClient(Clock(), ca, DIRECTORY, new_key(), "mailto:ops@example.test")
    done = run(client.ensure_account())
    assert done.called and done.result is None
    posts = [data for method, _, data in ca.seen if method == "POST"]
    assert [protected_nonce(body) for body in posts if body] == ["AAAA", "BBBB"]
    assert ca.steps == []


def test_other_problems_are_raised_with_their_retry_after():
    ca = ScriptedCA([
        ("GET", "/dir", FakeResponse(200, DIR_BODY)),
        ("HEAD", "/nonce", nonce("AAAA")),
        ("POST", "/acct", nonce("BBBB", 429, problem("rateLimited"), retry_after="120")),
    ])
    client = AcmeClient(Clock(), ca, DIRECTORY, new_key(), None)
    failure = run(client.ensure_account())
    error = failure.result.value
    failure.addErrback(lambda _: None)
    assert isinstance(error, AcmeProblem)
    assert error.code == "rateLimited"
    assert error.retry_after == 120


def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_seconds(b"30", 0) == 30
    assert retry_after_seconds(b"Thu, 01 Jan 1970 00:01:40 GMT", 40) == 60
    assert retry_after_seconds(None, 0) is None
    assert retry_after_seconds(b"soon", 0) is None


def test_ari_identifier_matches_the_rfc_9773_example():
    key = new_key()
    name = x509.Name([])
    aki = x509.AuthorityKeyIdentifier(
        bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4"), None, None)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(0x87654321)
            .not_valid_before(datetime.datetime(2026, 1, 1))
            .not_valid_after(datetime.datetime(2026, 2, 1))
            .add_extension(aki, critical=False).sign(key, hashes.SHA256()))
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
