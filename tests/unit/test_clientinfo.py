"""Client address and forwarded chains: X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

import ipaddress

from scarfgw.gateway.clientinfo import TrustedProxies, client_address, forwarded_chain

TRUSTED = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")])


def test_untrusted_peer_is_the_client() -> None:
    assert client_address("203.0.113.5", ["198.51.100.1"], TRUSTED) == "203.0.113.5"


def test_trusted_chain_is_walked_from_the_right() -> None:
    chain = forwarded_chain(["198.51.100.1, 10.1.1.1", "10.2.2.2"])
    assert chain == ["198.51.100.1", "10.1.1.1", "10.2.2.2"]
    assert client_address("10.0.0.1", chain, TRUSTED) == "198.51.100.1"
    assert client_address("::1", [], TRUSTED) == "::1"


def test_membership_handles_garbage() -> None:
    assert "10.9.9.9" in TRUSTED and "::1" in TRUSTED
    assert "11.0.0.1" not in TRUSTED and "not-an-ip" not in TRUSTED and None not in TRUSTED
