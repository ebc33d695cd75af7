"""A non-blocking RFC 8555 client: certbot's ``acme`` message types and JWS, treq transport.

One :class:`AcmeClient` per CA directory and account key. :meth:`AcmeClient.issue` runs one
order for one domain: authorizations answered through a :class:`ChallengeResponder`, fast
polling, finalization with the caller's fresh key, chain download. badNonce answers are
retried with the nonce they carry; every other problem is raised as :class:`AcmeProblem`.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from acme import crypto_util, jws, messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.b64 import b64decode, b64encode
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWKEC
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from scarfgw.tls.certs import KeyedChain, key_pem, load_keyed_chain

JOSE_JSON = b"application/jose+json"
PEM_CHAIN = b"application/pem-certificate-chain"
BAD_NONCE_RETRIES = 5
REQUEST_TIMEOUT = 30.0
POLL_FIRST = 0.05
POLL_FACTOR = 1.5
POLL_MAX = 2.0
POLL_DEADLINE = 120.0

_Body = TypeVar("_Body", messages.Authorization, messages.Order)


class AcmeProblem(Exception):
    """The CA refused or failed a request (``error`` is its RFC 7807 problem, if any)."""

    def __init__(self, message: str, error: messages.Error | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{message}: {error}" if error is not None else message)
        self.error = error
        self.retry_after = retry_after

    @property
    def code(self) -> str | None:
        """The problem type without its URN prefix (``badNonce``, ``rateLimited``, ...)."""
        return self.error.code if self.error is not None else None


class ChallengeResponder(Protocol):
    """Publishes and withdraws challenge answers (HTTP-01 tokens, TLS-ALPN-01 certificates)."""

    def present(self, domain: str, kind: str, token: str, key_authorization: str) -> None:
        """Start answering the challenge ``kind`` for ``domain``."""

    def cleanup(self, domain: str, kind: str, token: str) -> None:
        """Stop answering it."""


def retry_after_seconds(value: bytes | None, now: float) -> float | None:
    """A Retry-After header (delta-seconds or HTTP date) as seconds from ``now``."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError):
        return None


def ari_cert_id(cert: x509.Certificate) -> str:
    """The RFC 9773 certificate identifier: base64url(AKI keyIdentifier).base64url(serial)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")
    return f"{b64encode(aki.key_identifier or b'').decode()}.{b64encode(serial).decode()}"


class AcmeClient:
    """Talks to one ACME CA with one account key."""

    def __init__(self, clock: IReactorTime, http: Any, directory_url: str,
                 account_key: ec.EllipticCurvePrivateKey, contact: str | None) -> None:
        self.clock = clock
        self.http = http
        self.directory_url = directory_url
        self.contact = contact
        self._jwk = JWKEC(key=account_key)
        self._thumbprint = b64encode(self._jwk.thumbprint()).decode("ascii")
        self._kid: str | None = None
        self._directory: messages.Directory | None = None
        self._nonces: list[bytes] = []
        self._account_lock = defer.DeferredLock()

    async def _request(self, method: str, url: str, body: bytes | None = None,
                       headers: dict[bytes, list[bytes]] | None = None) -> tuple[Any, bytes]:
        response = await self.http.request(method, url, data=body, headers=headers,
                                           timeout=REQUEST_TIMEOUT)
        content = await response.content()
        self._nonces.extend(response.headers.getRawHeaders(b"replay-nonce", []))
        return response, content

    def _problem(self, url: str, response: Any, content: bytes) -> AcmeProblem:
        try:
            error: messages.Error | None = messages.Error.from_json(json.loads(content))
        except (ValueError, DeserializationError):
            error = None
        return AcmeProblem(f"{url}: HTTP {response.code}", error, self._retry_after(response))

    def _retry_after(self, response: Any) -> float | None:
        values = response.headers.getRawHeaders(b"retry-after") or [None]
        return retry_after_seconds(values[0], self.clock.seconds())

    async def directory(self) -> messages.Directory:
        """The CA's directory (fetched once)."""
        if self._directory is None:
            response, content = await self._request("GET", self.directory_url)
            if response.code != 200:
                raise self._problem(self.directory_url, response, content)
            self._directory = messages.Directory.from_json(json.loads(content))
        return self._directory

    async def _nonce(self) -> bytes:
        if not self._nonces:
            url = (await self.directory())["newNonce"]
            await self._request("HEAD", url)
            if not self._nonces:
                raise AcmeProblem(f"{url}: no Replay-Nonce in the answer")
        return self._nonces.pop()

    async def _post(self, url: str, payload: bytes, accept: bytes = b"application/json",
                    ) -> tuple[Any, bytes]:
        """POST a JWS (``payload`` b"" is POST-as-GET); retry badNonce with a fresh nonce."""
        for attempt in range(BAD_NONCE_RETRIES + 1):
            nonce = b64decode(await self._nonce())
            signed = jws.JWS.sign(payload, key=self._jwk, alg=ES256, nonce=nonce, url=url,
                                  kid=self._kid)
            response, content = await self._request(
                "POST", url, signed.json_dumps().encode(),
                {b"content-type": [JOSE_JSON], b"accept": [accept]},
            )
            if response.code < 400:
                return response, content
            problem = self._problem(url, response, content)
            if problem.code != "badNonce" or attempt == BAD_NONCE_RETRIES:
                raise problem
        raise AssertionError("unreachable")

    async def ensure_account(self) -> None:
        """Register the account key (newAccount is idempotent for a known key)."""
        async with self._account_lock:
            if self._kid is not None:
                return
            registration = messages.NewRegistration(
                contact=(self.contact,) if self.contact else (), terms_of_service_agreed=True,
            )
            url = (await self.directory())["newAccount"]
            response, _ = await self._post(url, registration.json_dumps().encode())
            location = response.headers.getRawHeaders(b"location")
            if not location:
                raise AcmeProblem(f"{url}: no account URL in the answer")
            self._kid = location[0].decode("ascii")

    async def _fetch(self, url: str, decode: Callable[[Any], _Body]) -> _Body:
        _, content = await self._post(url, b"")
        return decode(json.loads(content))

    async def _poll(self, url: str, decode: Callable[[Any], _Body],
                    pending: tuple[messages.Status, ...]) -> _Body:
        """POST-as-GET ``url`` until its status leaves ``pending`` (50 ms first, backing off)."""
        delay = POLL_FIRST
        deadline = self.clock.seconds() + POLL_DEADLINE
        while True:
            body = await self._fetch(url, decode)
            if body.status not in pending:
                return body
            if self.clock.seconds() > deadline:
                raise AcmeProblem(f"{url}: still {body.status} after {POLL_DEADLINE:.0f} s")
            await task.deferLater(self.clock, delay, lambda: None)
            delay = min(delay * POLL_FACTOR, POLL_MAX)

    async def _authorize(self, domain: str, url: str, kind: str,
                         responder: ChallengeResponder) -> None:
        authz = await self._fetch(url, messages.Authorization.from_json)
        if authz.status == messages.STATUS_VALID:
            return
        offered = [c.to_partial_json() for c in authz.challenges]
        challenge = next((c for c in offered if c["type"] == kind), None)
        if challenge is None:
            raise AcmeProblem(f"{url}: the CA offers no {kind} challenge for {domain}")
        token = challenge["token"]
        responder.present(domain, kind, token, f"{token}.{self._thumbprint}")
        try:
            await self._post(challenge["url"], b"{}")
            authz = await self._poll(url, messages.Authorization.from_json,
                                     (messages.STATUS_PENDING, messages.STATUS_PROCESSING))
        finally:
            responder.cleanup(domain, kind, token)
        if authz.status != messages.STATUS_VALID:
            errors = [c.error for c in authz.challenges if c.error is not None]
            raise AcmeProblem(f"{kind} validation of {domain} {authz.status}",
                              errors[0] if errors else None)

    async def issue(self, domain: str, key: ec.EllipticCurvePrivateKey, kind: str,
                    responder: ChallengeResponder) -> KeyedChain:
        """Order, authorize, finalize with ``key`` and download the chain for ``domain``."""
        await self.ensure_account()
        new_order = messages.NewOrder(
            identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=domain)],
        )
        response, content = await self._post((await self.directory())["newOrder"],
                                             new_order.json_dumps().encode())
        order_url = response.headers.getRawHeaders(b"location")[0].decode("ascii")
        order = messages.Order.from_json(json.loads(content))
        for authz_url in order.authorizations:
            await self._authorize(domain, authz_url, kind, responder)
        order = await self._poll(order_url, messages.Order.from_json, (messages.STATUS_PENDING,))
        pem = key_pem(key)
        if order.status == messages.STATUS_READY:
            csr = x509.load_pem_x509_csr(crypto_util.make_csr(pem, [domain]))
            await self._post(order.finalize, messages.CertificateRequest(csr=csr).json_dumps()
                             .encode())
            order = await self._poll(order_url, messages.Order.from_json,
                                     (messages.STATUS_READY, messages.STATUS_PROCESSING))
        if order.status != messages.STATUS_VALID or not order.certificate:
            raise AcmeProblem(f"order {order_url} for {domain} ended {order.status}", order.error)
        _, chain = await self._post(order.certificate, b"", accept=PEM_CHAIN)
        return load_keyed_chain(pem, chain)

    async def renewal_window(self, cert: x509.Certificate) -> tuple[float, float, float | None]:
        """ARI: the CA's suggested window (start, end) and its Retry-After, in Unix seconds.

        Raises KeyError when the CA does not offer ``renewalInfo``.
        """
        base = (await self.directory())["renewalInfo"]
        url = f"{base.rstrip('/')}/{ari_cert_id(cert)}"
        response, content = await self._request("GET", url)
        if response.code != 200:
            raise self._problem(url, response, content)
        window = messages.RenewalInfo.from_json(json.loads(content)).suggested_window
        return window.start.timestamp(), window.end.timestamp(), self._retry_after(response)
