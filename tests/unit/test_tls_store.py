"""Certificate storage: atomic files, key modes, and certmagic-style locks on a fake clock."""

from __future__ import annotations

import stat

import pytest
from twisted.internet.task import Clock

from scarfgw.tls.certs import self_signed
from scarfgw.tls.store import CertStore, issuer_slug


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_certificate_loads_back_with_a_private_key_file(tmp_path):
    store = CertStore(str(tmp_path), Clock(), "a")
    keyed = self_signed("a.test", 0, 86400)
    store.save("a.test", keyed)
    loaded = store.load("a.test")
    assert loaded is not None
    assert loaded.leaf == keyed.leaf
    assert mode(tmp_path / "certificates" / "a.test" / "privkey.pem") == 0o600
    assert mode(tmp_path / "certificates" / "a.test" / "fullchain.pem") == 0o644
    assert not [p for p in (tmp_path / "certificates" / "a.test").iterdir()
                if p.name.startswith(".tmp-")]


def test_missing_certificate_is_none_and_a_mismatched_pair_is_refused(tmp_path):
    store = CertStore(str(tmp_path), Clock(), "a")
    assert store.load("a.test") is None
    store.save("a.test", self_signed("a.test", 0, 86400))
    other = self_signed("a.test", 0, 86400)
    (tmp_path / "certificates" / "a.test" / "fullchain.pem").write_bytes(other.chain_pem())
    with pytest.raises(ValueError, match="does not match"):
        store.load("a.test")


def test_unsafe_domain_names_are_refused(tmp_path):
    store = CertStore(str(tmp_path), Clock(), "a")
    for name in ("../etc", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            store.load(name)


def test_account_key_is_created_once_and_reused(tmp_path):
    first = CertStore(str(tmp_path), Clock(), "a").account_key("https://ca.test/dir")
    second = CertStore(str(tmp_path), Clock(), "b").account_key("https://ca.test/dir")
    assert first.private_numbers() == second.private_numbers()
    path = tmp_path / "accounts" / f"{issuer_slug('https://ca.test/dir')}.key"
    assert mode(path) == 0o600


def test_lock_excludes_a_second_instance_until_released(tmp_path):
    clock = Clock()
    one, two = CertStore(str(tmp_path), clock, "one"), CertStore(str(tmp_path), clock, "two")
    assert one.try_lock("a.test")
    assert not two.try_lock("a.test")
    two.unlock("a.test")
    assert not two.try_lock("a.test"), "unlock must not release someone else's lock"
    one.unlock("a.test")
    assert two.try_lock("a.test")


def test_refreshed_lock_stays_and_an_abandoned_one_goes_stale(tmp_path):
    clock = Clock()
    one = CertStore(str(tmp_path), clock, "one", stale_after=10)
    two = CertStore(str(tmp_path), clock, "two", stale_after=10)
    assert one.try_lock("a.test")
    for _ in range(5):
        clock.advance(5)
        one.refresh_lock("a.test")
        assert not two.try_lock("a.test")
    clock.advance(10.5)
    assert two.try_lock("a.test"), "a lock not refreshed for 10 s is abandoned"
    one.refresh_lock("a.test")
    assert not one.try_lock("a.test"), "the old holder must not take it back by refreshing"


def test_unstorable_challenge_names_are_simply_absent(tmp_path):
    store = CertStore(str(tmp_path), Clock(), "me")
    for name in ("a" * 300, "../x", "", "a/b"):
        assert store.load_challenge("http-01", name) is None
        store.remove_challenge("http-01", name)


def test_a_lock_taken_over_meanwhile_is_put_back_not_deleted(tmp_path):
    clock = Clock()
    first = CertStore(str(tmp_path), clock, "first", stale_after=10)
    second = CertStore(str(tmp_path), clock, "second", stale_after=10)
    assert first.try_lock("a.test")
    clock.advance(11)
    path = second._lock_path("a.test")
    judged_stale = second._holder(path)  # second reads the abandoned record...
    assert judged_stale is not None
    first.unlock("a.test")  # ...while another instance replaces it with a fresh lock
    assert first.try_lock("a.test")
    assert second._remove_stale(path, judged_stale) is False
    holder = first._holder(path)
    assert holder is not None and holder[0] == "first", "the fresh lock is put back"
    assert not second.try_lock("a.test"), "and it still excludes the second instance"
