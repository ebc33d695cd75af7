"""The certificate manager on a fake clock: ordering, renewal, ARI, backoff, verification,
locks shared with another instance, restart reuse."""

from __future__ import annotations

from typing import Any

from acme import messages
from twisted.internet.task import Clock

from scarfgw.ops import metrics
from scarfgw.tls.acme import AcmeProblem
from scarfgw.tls.certs import self_signed
from scarfgw.tls.manager import TLSService
from scarfgw.tls.schedule import Timing
from scarfgw.tls.settings import TLSConfig, VerificationConfig
from scarfgw.tls.store import CertStore

DAY = 86400.0
TIMING = Timing(jitter=0.0)


class FakeIssuer:
    """Issues self-signed certificates of ``lifetime`` on the fake clock."""

    def __init__(self, clock: Clock, lifetime: float) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[str] = []
        self.failures: dict[str, list[Exception]] = {}
        self.window: tuple[float, float] | None = None

    async def issue(self, domain: str, key: Any, kind: str, responder: Any) -> Any:
        self.calls.append(domain)
        pending = self.failures.get(domain)
        if pending:
            raise pending.pop(0)
        return self_signed(domain, self.clock.seconds(), self.lifetime)

    async def renewal_window(self, cert: Any) -> tuple[float, float, float | None]:
        """The window, relative to the certificate's start."""
        if self.window is None:
            raise KeyError("renewalInfo")
        start = cert.not_valid_before_utc.timestamp()
        return start + self.window[0], start + self.window[1], None


class FakeVerifier:
    def __init__(self) -> None:
        self.proved: set[str] = set()
        self.checks: list[str] = []

    async def check(self, domain: str) -> bool:
        self.checks.append(domain)
        return domain in self.proved


def make(tmp_path, domains, clock, issuer, timing=TIMING, follower=False) -> TLSService:
    config = TLSConfig(storage=str(tmp_path), verification=VerificationConfig(mode="none"))
    return TLSService(clock, config, frozenset(domains), clock=clock, timing=timing,
                      issuer=issuer, follower=follower)


def advance(clock: Clock, seconds: float, step: float = 600.0) -> None:
    while seconds > 0:
        clock.advance(min(step, seconds))
        seconds -= step


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_six_day_certificate_is_renewed_when_two_days_are_left(tmp_path):
    clock = Clock()
    issuer = FakeIssuer(clock, 6 * DAY)
    service = make(tmp_path, {"a.test"}, clock, issuer)
    service.startService()
    assert issuer.calls == ["a.test"]
    assert service.has_certificate("a.test")
    first = service.store.load("a.test")
    assert first is not None
    assert sample("scarfgw_tls_certificate_not_after_timestamp_seconds",
                  domain="a.test") == first.not_after
    advance(clock, 4 * DAY - 1)
    assert issuer.calls == ["a.test"]
    advance(clock, 2)
    assert issuer.calls == ["a.test", "a.test"]
    renewed = service.store.load("a.test")
    assert renewed is not None
    assert renewed.leaf != first.leaf
    service.stopService()


def test_restart_reuses_the_stored_certificate_without_ordering(tmp_path):
    clock = Clock()
    first = make(tmp_path, {"a.test"}, clock, FakeIssuer(clock, 90 * DAY))
    first.startService()
    first.stopService()
    issuer = FakeIssuer(clock, 90 * DAY)
    second = make(tmp_path, {"a.test"}, clock, issuer)
    second.startService()
    assert second.has_certificate("a.test")
    advance(clock, DAY)
    assert issuer.calls == []
    second.stopService()


def test_a_rate_limited_domain_backs_off_without_holding_up_others(tmp_path):
    clock = Clock()
    issuer = FakeIssuer(clock, 90 * DAY)
    limited = messages.Error.with_code("rateLimited", detail="too many")
    issuer.failures["bad.test"] = [AcmeProblem("order", limited, retry_after=3600)]
    before = sample("scarfgw_acme_orders_total", result="rate_limited")
    service = make(tmp_path, {"bad.test", "good.test"}, clock, issuer)
    service.startService()
    assert service.has_certificate("good.test")
    assert not service.has_certificate("bad.test")
    assert sample("scarfgw_acme_orders_total", result="rate_limited") == before + 1
    advance(clock, 3599, step=60)
    assert issuer.calls.count("bad.test") == 1
    advance(clock, 2)
    assert issuer.calls.count("bad.test") == 2
    assert service.has_certificate("bad.test")
    service.stopService()


def test_failures_back_off_along_the_table(tmp_path):
    clock = Clock()
    issuer = FakeIssuer(clock, 90 * DAY)
    issuer.failures["a.test"] = [RuntimeError("boom")] * 3
    timing = Timing(jitter=0.0, order_backoff=(10.0, 20.0, 40.0))
    service = make(tmp_path, {"a.test"}, clock, issuer, timing)
    service.startService()
    for wait, calls in ((10, 2), (20, 3), (40, 4)):
        advance(clock, wait - 0.5, step=1)
        assert len(issuer.calls) == calls - 1
        advance(clock, 1, step=1)
        assert len(issuer.calls) == calls
    assert service.has_certificate("a.test")
    service.stopService()


def test_a_domain_locked_by_another_instance_is_not_ordered_twice(tmp_path):
    clock = Clock()
    other = CertStore(str(tmp_path), clock, "other-instance")
    assert other.try_lock("a.test")
    issuer = FakeIssuer(clock, 90 * DAY)
    service = make(tmp_path, {"a.test"}, clock, issuer)
    service.startService()
    for _ in range(3):
        advance(clock, TIMING.lock_retry, step=1)
        other.refresh_lock("a.test")
    assert issuer.calls == []
    other.save("a.test", self_signed("a.test", clock.seconds(), 90 * DAY))
    other.unlock("a.test")
    advance(clock, TIMING.lock_retry, step=1)
    assert service.has_certificate("a.test")
    assert issuer.calls == []
    service.stopService()


def test_an_abandoned_lock_is_taken_over(tmp_path):
    clock = Clock()
    assert CertStore(str(tmp_path), clock, "crashed").try_lock("a.test")
    issuer = FakeIssuer(clock, 90 * DAY)
    service = make(tmp_path, {"a.test"}, clock, issuer)
    service.startService()
    advance(clock, TIMING.lock_stale_after + 2 * TIMING.lock_retry, step=1)
    assert issuer.calls == ["a.test"]
    service.stopService()


def test_unverified_domains_are_not_ordered_and_rechecked_with_backoff(tmp_path):
    clock = Clock()
    issuer = FakeIssuer(clock, 90 * DAY)
    timing = Timing(jitter=0.0, verify_backoff=(60.0, 120.0))
    service = make(tmp_path, {"a.test"}, clock, issuer, timing)
    verifier = service.verifier = FakeVerifier()  # type: ignore[assignment]
    before = sample("scarfgw_domain_verifications_total", result="failure")
    service.startService()
    advance(clock, 59, step=1)
    assert verifier.checks == ["a.test"]
    advance(clock, 2, step=1)
    advance(clock, 118, step=1)
    assert verifier.checks == ["a.test"] * 2
    advance(clock, 2, step=1)
    assert verifier.checks == ["a.test"] * 3
    assert sample("scarfgw_domain_verifications_total", result="failure") == before + 3
    assert issuer.calls == []
    verifier.proved.add("a.test")
    service.set_domains(frozenset({"a.test"}))
    assert issuer.calls == ["a.test"], "a reload re-checks waiting domains at once"
    assert service.has_certificate("a.test")
    service.stopService()


def test_ari_window_decides_the_renewal_time(tmp_path):
    clock = Clock()
    issuer = FakeIssuer(clock, 90 * DAY)
    issuer.window = (10 * DAY, 11 * DAY)
    service = make(tmp_path, {"a.test"}, clock, issuer)
    service.startService()
    advance(clock, 10 * DAY - 1)
    assert issuer.calls == ["a.test"]
    advance(clock, DAY + 601)
    assert issuer.calls == ["a.test", "a.test"]
    service.stopService()


def test_removed_domains_stop_being_served_and_measured(tmp_path):
    clock = Clock()
    service = make(tmp_path, {"a.test", "b.test"}, clock, FakeIssuer(clock, 90 * DAY))
    service.startService()
    service.set_domains(frozenset({"b.test"}))
    assert not service.has_certificate("a.test")
    assert service.has_certificate("b.test")
    assert metrics.REGISTRY.get_sample_value(
        "scarfgw_tls_certificate_not_after_timestamp_seconds", {"domain": "a.test"}) is None
    service.stopService()


def test_challenges_are_published_and_withdrawn(tmp_path):
    clock = Clock()
    service = make(tmp_path, set(), clock, FakeIssuer(clock, DAY))
    service.present("a.test", "http-01", "tok", "tok.thumb")
    assert service.http01_response("tok") == b"tok.thumb"
    service.cleanup("a.test", "http-01", "tok")
    assert service.http01_response("tok") is None
    service.present("a.test", "tls-alpn-01", "tok", "tok.thumb")
    service.cleanup("a.test", "tls-alpn-01", "tok")
    assert not service.has_certificate("a.test")


def test_a_follower_orders_nothing_and_serves_what_the_primary_tells_it_about(tmp_path):
    clock = Clock()
    issuer = FakeIssuer(clock, 90 * DAY)
    follower = make(tmp_path, {"a.test"}, clock, issuer, follower=True)
    follower.startService()
    assert not follower.sni.has("a.test") and issuer.calls == []
    primary = make(tmp_path, {"a.test"}, clock, issuer)
    primary.on_installed = follower.certificate_stored
    primary.startService()
    assert issuer.calls == ["a.test"]
    assert follower.sni.has("a.test")
    assert issuer.calls == ["a.test"]
    primary.stopService()
    follower.stopService()


def test_a_follower_not_told_yet_looks_in_storage_before_falling_back(tmp_path):
    clock = Clock()
    issuer = FakeIssuer(clock, 90 * DAY)
    follower = make(tmp_path, {"a.test"}, clock, issuer, follower=True)
    follower.startService()
    primary = make(tmp_path, {"a.test"}, clock, issuer)
    primary.startService()
    assert not follower.sni.has("a.test")
    assert follower.has_certificate("A.test.")
    assert not follower.has_certificate("unconfigured.test")
    primary.stopService()
    follower.stopService()


def test_challenge_answers_published_by_one_process_are_answered_by_another(tmp_path):
    clock = Clock()
    primary = make(tmp_path, set(), clock, FakeIssuer(clock, 90 * DAY))
    other = make(tmp_path, set(), clock, FakeIssuer(clock, 90 * DAY))
    primary.present("a.test", "http-01", "tok_1-x", "tok_1-x.thumb")
    assert other.http01_response("tok_1-x") == b"tok_1-x.thumb"
    assert other.http01_response("../../etc/passwd") is None
    primary.present("a.test", "tls-alpn-01", "tok2", "tok2.thumb")
    assert other._stored_alpn_challenge("a.test") is not None
    primary.cleanup("a.test", "http-01", "tok_1-x")
    primary.cleanup("a.test", "tls-alpn-01", "tok2")
    assert other.http01_response("tok_1-x") is None
    assert other._stored_alpn_challenge("a.test") is None


class SlowVerifier:
    """Ownership lookups that wait until the test answers them."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    async def check(self, domain: str) -> bool:
        from twisted.internet import defer

        lookup: defer.Deferred[bool] = defer.Deferred()
        self.pending.append(lookup)
        return await lookup


def test_a_reload_during_a_lookup_leaves_one_maintenance_loop(tmp_path):
    clock = Clock()
    timing = Timing(jitter=0.0, verify_backoff=(60.0,))
    service = make(tmp_path, {"a.test"}, clock, FakeIssuer(clock, 90 * DAY), timing)
    verifier = service.verifier = SlowVerifier()  # type: ignore[assignment]
    errors = sample("scarfgw_domain_verifications_total", result="error")
    service.startService()
    verifier.pending[0].callback(False)
    advance(clock, 61, step=1)
    assert len(verifier.pending) == 2, "the re-check after the backoff is under way"
    service.set_domains(frozenset({"a.test"}))
    service.set_domains(frozenset({"a.test"}))
    assert len(verifier.pending) == 4, "each reload restarts the waiting domain's check"
    assert sample("scarfgw_domain_verifications_total", result="error") == errors
    verifier.pending[-1].callback(False)
    advance(clock, 61, step=1)
    assert len(verifier.pending) == 5, "one re-check after the backoff, not one per reload"
    verifier.pending[-1].callback(False)
    service.stopService()
