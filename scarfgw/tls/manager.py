"""Certificate management: verify -> lock -> order -> store -> install -> renew, per domain.

Every configured domain runs its own maintenance pass on the injected clock: it installs
what storage holds (another instance may have renewed it), and when no certificate is
stored or renewal is due, it checks domain ownership, takes the domain's storage lock and
orders. A failing domain backs off on its own; the others are never held up.
"""

from __future__ import annotations

import datetime
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from scarfgw.ops import metrics
from scarfgw.rules.request import normalize_domain
from scarfgw.tls.acme import AcmeClient, AcmeProblem, ChallengeResponder
from scarfgw.tls.certs import (
    KeyedChain,
    alpn_challenge_cert,
    new_key,
    self_signed,
    trust_root,
)
from scarfgw.tls.owncerts import OwnCertificate, covering, uncovered
from scarfgw.tls.schedule import Timing, ari_time, backoff, renewal_time
from scarfgw.tls.settings import TLSConfig
from scarfgw.tls.sni import SNIServerOptions
from scarfgw.tls.store import CertStore
from scarfgw.tls.tickets import TICKETS_FOLDER, TicketKeys
from scarfgw.tls.verify import OwnershipCheck

log = Logger()

DEFAULT_TIMING = Timing()
FALLBACK_NAME = "fallback.scarfgw.invalid"
HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"


class Issuer(Protocol):
    """What the manager needs from an ACME client (:class:`~scarfgw.tls.acme.AcmeClient`)."""

    async def issue(self, domain: str, key: ec.EllipticCurvePrivateKey, kind: str,
                    responder: ChallengeResponder) -> KeyedChain:
        """Obtain a certificate for ``domain`` with ``key``."""

    async def renewal_window(self, cert: x509.Certificate) -> tuple[float, float, float | None]:
        """ARI window and Retry-After; KeyError when the CA has no ARI."""


@dataclass
class _Domain:
    """What the manager knows about one configured domain."""

    name: str
    installed: KeyedChain | None = None
    renew_at: float = 0.0
    ari_checked_until: float = 0.0
    ari_renew_at: float | None = None
    order_failures: int = 0
    verify_failures: int = 0
    timer: IDelayedCall | None = None
    running: defer.Deferred[float] | None = None

    def next_renewal(self) -> float:
        """The CA's suggestion (ARI) when there is one, else the lifetime-based time."""
        return self.ari_renew_at if self.ari_renew_at is not None else self.renew_at

    @property
    def awaiting_verification(self) -> bool:
        """True while the last ownership check failed (a reload re-checks at once)."""
        return self.verify_failures > 0


def _normalized(domains: Iterable[str]) -> frozenset[str]:
    return frozenset(normalize_domain(domain) for domain in domains)


class TLSService(Service):
    """Owns the SNI contexts and keeps a valid certificate installed for every domain."""

    def __init__(self, reactor: Any, config: TLSConfig, domains: frozenset[str],
                 clock: Any = None, timing: Timing | None = None, issuer: Issuer | None = None,
                 follower: bool = False, on_installed: Callable[[str], None] | None = None
                 ) -> None:
        self.follower = follower
        self.on_installed = on_installed
        """Told the domain of every certificate this process installs (the primary tells its
        workers, which then load it from storage: :meth:`certificate_stored`)."""
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.config = config
        self.timing = timing if timing is not None else DEFAULT_TIMING
        self.rng = random.Random()
        self.store = CertStore(config.storage, self.clock, uuid.uuid4().hex,
                               self.timing.lock_stale_after)
        now = self.clock.seconds()
        tickets = (TicketKeys(Path(config.storage) / TICKETS_FOLDER, self.clock)
                   if config.session_tickets else None)
        self.sni = SNIServerOptions(self_signed(FALLBACK_NAME, now - 60, 10 * 365 * 86400),
                                    self._stored_alpn_challenge, self._load_missing, tickets)
        self.verifier = self._verifier(reactor, config)
        self._http: HTTPClient | None = None
        self._pool: HTTPConnectionPool | None = None
        self._issuer = issuer
        self._http01: dict[str, bytes] = {}
        self._own: tuple[OwnCertificate, ...] = ()
        self._served: frozenset[str] = frozenset()
        self._domains: dict[str, _Domain] = {}
        self.use_certificates(config.certificates)
        self.set_domains(domains)

    @staticmethod
    def _verifier(reactor: Any, config: TLSConfig) -> OwnershipCheck | None:
        verification = config.verification
        if verification.mode != "txt":
            return None
        if not verification.secret:
            raise ValueError("tls.verification.secret is required with mode txt")
        return OwnershipCheck(reactor, verification.secret, verification.resolver)

    # -- the gateway's side and the listener's ---------------------------------------------

    def http01_response(self, token: str) -> bytes | None:
        """The key authorization for a pending HTTP-01 token (ours, or published in storage
        by the process that placed the order)."""
        answer = self._http01.get(token)
        if answer is None:
            stored = self.store.load_challenge(HTTP_01, token)
            answer = stored.encode("ascii") if stored is not None else None
        return answer

    def _stored_alpn_challenge(self, domain: str) -> KeyedChain | None:
        stored = self.store.load_challenge(TLS_ALPN_01, domain)
        if stored is None:
            return None
        return alpn_challenge_cert(domain, stored, self.clock.seconds())

    def has_certificate(self, domain: str) -> bool:
        """True once ``domain`` has a certificate installed (one in storage that this process
        was not told about yet is installed now)."""
        name = normalize_domain(domain)
        if not self.sni.has(name):
            self._load_missing(name)
        return self.sni.has(name)

    def _load_missing(self, domain: str) -> None:
        """Install the stored certificate of a configured ``domain`` that has none yet (the
        SNI callback and the plain-HTTP 308 ask before falling back)."""
        state = self._domains.get(domain)
        if state is not None and state.installed is None:
            self._load_stored(state)

    def certificate_stored(self, domain: str) -> None:
        """Another process stored a certificate for ``domain``: serve it from now on."""
        state = self._domains.get(normalize_domain(domain))
        if state is not None:
            self._load_stored(state)

    def server_options(self) -> SNIServerOptions:
        """The connection creator of the https listener."""
        return self.sni

    # -- ChallengeResponder -----------------------------------------------------------------

    def present(self, domain: str, kind: str, token: str, key_authorization: str) -> None:
        """Answer HTTP-01 on the plain listener, or TLS-ALPN-01 in the SNI callback; publish
        the answer in storage for the other processes sharing it."""
        self.store.save_challenge(kind, token if kind == HTTP_01 else domain, key_authorization)
        if kind == HTTP_01:
            self._http01[token] = key_authorization.encode("ascii")
        else:
            cert = alpn_challenge_cert(domain, key_authorization, self.clock.seconds())
            self.sni.add_challenge(domain, cert)

    def cleanup(self, domain: str, kind: str, token: str) -> None:
        """Withdraw a challenge answer."""
        self.store.remove_challenge(kind, token if kind == HTTP_01 else domain)
        if kind == HTTP_01:
            self._http01.pop(token, None)
        else:
            self.sni.remove_challenge(domain)

    # -- lifecycle --------------------------------------------------------------------------

    def not_after(self) -> dict[str, float]:
        """Expiry (Unix time) of the certificate served for each configured domain: the
        operator's certificate covering it, else the one installed by ACME."""
        expiry = {name: state.installed.not_after for name, state in self._domains.items()
                  if state.installed is not None}
        for name in self._served:
            own = covering(self._own, name)
            if own is not None:
                expiry[name] = own.not_after
        return expiry

    def startService(self) -> None:
        """Start every domain's maintenance (each pass first installs what storage holds)."""
        super().startService()
        if not self.follower:
            metrics.TLS_CERT_NOT_AFTER.sources.append(self.not_after)
        for state in list(self._domains.values()):
            self._wake(state)

    def stopService(self) -> defer.Deferred[None]:
        """Stop timers and passes (locks are released as passes unwind)."""
        super().stopService()
        if self.not_after in metrics.TLS_CERT_NOT_AFTER.sources:
            metrics.TLS_CERT_NOT_AFTER.sources.remove(self.not_after)
        for state in self._domains.values():
            self._halt(state)
        if self._pool is None:
            return defer.succeed(None)
        closed: defer.Deferred[None] = self._pool.closeCachedConnections()
        return closed

    def use_certificates(self, certificates: tuple[OwnCertificate, ...]) -> None:
        """Serve the operator's certificates (``tls.certificates``, read by the config load)
        ahead of ACME; call :meth:`set_domains` next, so covered names stop being ordered."""
        changed = certificates != self._own
        self._own = certificates
        self.sni.use_own(certificates)
        now = self.clock.seconds()
        for cert in certificates:
            until = datetime.datetime.fromtimestamp(cert.not_after, datetime.UTC)
            if cert.not_after <= now:
                log.warn("the certificate {path} for {names} expired on {not_after}: clients "
                         "refuse it until it is replaced (then SIGHUP)", path=cert.cert_path,
                         names=", ".join(sorted(cert.names)), not_after=until)
            elif changed:
                log.info("serving the certificate {path} for {names}, valid until {not_after}",
                         path=cert.cert_path, names=", ".join(sorted(cert.names)),
                         not_after=until)

    def set_domains(self, domains: frozenset[str]) -> None:
        """Manage exactly ``domains`` (those no operator certificate covers) from now on;
        re-check those still awaiting ownership."""
        self._served = _normalized(domains)
        wanted = uncovered(self._own, self._served)
        for name in set(self._domains) - wanted:
            self._halt(self._domains.pop(name))
            self.sni.remove(name)
            log.info("no longer managing a certificate for {domain}", domain=name)
        for name in wanted:
            state = self._domains.get(name)
            if state is None:
                state = self._domains[name] = _Domain(name)
            elif not state.awaiting_verification:
                continue
            if self.running:
                self._halt(state)
                self._wake(state)

    def _halt(self, state: _Domain) -> None:
        if state.timer is not None and state.timer.active():
            state.timer.cancel()
        state.timer = None
        if state.running is not None:
            state.running.cancel()

    # -- the maintenance pass ---------------------------------------------------------------

    def _wake(self, state: _Domain) -> None:
        if self.follower:
            self._load_stored(state)
            return
        state.timer = None
        running = defer.Deferred.fromCoroutine(self._pass(state))
        state.running = running
        running.addBoth(self._passed, state)

    def _passed(self, result: float | Failure, state: _Domain) -> None:
        state.running = None
        if isinstance(result, Failure):
            if result.check(defer.CancelledError):
                return
            log.failure("certificate maintenance of {domain} failed", result, domain=state.name)
            result = self.timing.maintenance_interval
        if self.running and self._domains.get(state.name) is state:
            state.timer = self.clock.callLater(max(0.0, result), self._wake, state)

    async def _pass(self, state: _Domain) -> float:
        """One pass; returns the seconds until the next one."""
        self._load_stored(state)
        due = await self._due(state)
        now = self.clock.seconds()
        if due > now:
            return min(due - now, self.timing.maintenance_interval)
        if not await self._verified(state):
            return backoff(state.verify_failures, self.timing.verify_backoff)
        if not self.store.try_lock(state.name):
            log.info("{domain}: another instance holds the order lock, waiting", domain=state.name)
            return self.timing.lock_retry
        refresher = task.LoopingCall(self.store.refresh_lock, state.name)
        refresher.clock = self.clock
        refresher.start(self.timing.lock_refresh, now=False)
        try:
            self._load_stored(state)
            if state.installed is not None and state.next_renewal() > self.clock.seconds():
                return 0.0
            return await self._order(state)
        finally:
            refresher.stop()
            self.store.unlock(state.name)

    def _load_stored(self, state: _Domain) -> None:
        """Install the stored certificate if it is new to us and not expired."""
        try:
            stored = self.store.load(state.name)
        except (OSError, ValueError) as exc:
            log.warn("stored certificate for {domain} is unusable: {error}",
                     domain=state.name, error=exc)
            return
        if stored is None or stored.not_after <= self.clock.seconds():
            return
        if state.installed is None or stored.leaf != state.installed.leaf:
            self._install(state, stored)

    def _install(self, state: _Domain, keyed: KeyedChain) -> None:
        self.sni.install(state.name, keyed)
        state.installed = keyed
        if self.on_installed is not None:
            self.on_installed(state.name)
        state.renew_at = renewal_time(keyed.not_before, keyed.not_after, self.timing, self.rng)
        state.ari_checked_until = 0.0
        state.ari_renew_at = None
        log.info("serving a certificate for {domain}, valid until {not_after}, renewal from "
                 "{renew_at}", domain=state.name, not_after=keyed.leaf.not_valid_after_utc,
                 renew_at=datetime.datetime.fromtimestamp(state.renew_at, datetime.UTC))

    async def _due(self, state: _Domain) -> float:
        """When the installed certificate should be renewed (now if there is none)."""
        if state.installed is None:
            return 0.0
        now = self.clock.seconds()
        if now >= state.ari_checked_until and state.installed.not_after > now:
            await self._check_ari(state)
        return state.next_renewal()

    async def _check_ari(self, state: _Domain) -> None:
        """Ask the CA for its renewal window (ARI), when it offers one."""
        assert state.installed is not None
        now = self.clock.seconds()
        try:
            start, end, retry_after = await self._client().renewal_window(state.installed.leaf)
        except KeyError:
            state.ari_checked_until = float("inf")
            return
        except defer.CancelledError:
            raise
        except Exception as exc:
            log.warn("{domain}: renewal info unavailable, renewing by lifetime: {error}",
                     domain=state.name, error=exc)
            state.ari_checked_until = now + self.timing.maintenance_interval
            return
        state.ari_renew_at = ari_time(start, end, self.rng)
        state.ari_checked_until = now + (retry_after or 6 * 3600)

    async def _verified(self, state: _Domain) -> bool:
        """Whether ownership of the domain is proved (always, with verification mode none)."""
        if self.verifier is None:
            return True
        try:
            proved = await self.verifier.check(state.name)
            result = "success" if proved else "failure"
        except defer.CancelledError:
            raise
        except Exception as exc:
            proved, result = False, "error"
            log.warn("{domain}: ownership lookup failed: {error}", domain=state.name, error=exc)
        metrics.DOMAIN_VERIFICATIONS.labels(result).inc()
        if proved:
            state.verify_failures = 0
            return True
        state.verify_failures += 1
        if result == "failure":
            log.info("{domain}: ownership TXT record missing or wrong, no certificate ordered "
                     "(check {count})", domain=state.name, count=state.verify_failures)
        return False

    async def _order(self, state: _Domain) -> float:
        """Order, store and install a certificate; returns the seconds until the next pass."""
        started = self.clock.seconds()
        try:
            keyed = await self._client().issue(state.name, new_key(),
                                               self.config.acme.challenge, self)
            self.store.save(state.name, keyed)
        except defer.CancelledError:
            raise
        except Exception as exc:
            state.order_failures += 1
            wait = backoff(state.order_failures, self.timing.order_backoff)
            result = "failure"
            if isinstance(exc, AcmeProblem):
                wait = max(wait, exc.retry_after or 0.0)
                result = "rate_limited" if exc.code == "rateLimited" else result
            metrics.ACME_ORDERS.labels(result).inc()
            log.error("{domain}: certificate order failed ({count} in a row), next attempt in "
                      "{wait:.0f} s: {error}", domain=state.name, count=state.order_failures,
                      wait=wait, error=exc)
            return wait
        metrics.ACME_ORDERS.labels("success").inc()
        state.order_failures = 0
        log.info("{domain}: certificate issued in {seconds:.2f} s", domain=state.name,
                 seconds=self.clock.seconds() - started)
        self._install(state, keyed)
        return 0.0

    def _client(self) -> Issuer:
        if self._issuer is None:
            acme = self.config.acme
            self._issuer = AcmeClient(self.clock, self._treq(), acme.directory,
                                      self.store.account_key(acme.directory), acme.contact)
        return self._issuer

    def _treq(self) -> Any:
        if self._http is None:
            ca_bundle = self.config.acme.ca_bundle
            policy = (BrowserLikePolicyForHTTPS(trustRoot=trust_root(ca_bundle)) if ca_bundle
                      else BrowserLikePolicyForHTTPS())
            self._pool = HTTPConnectionPool(self.reactor)
            self._http = HTTPClient(Agent(self.reactor, contextFactory=policy, pool=self._pool))
        return self._http
