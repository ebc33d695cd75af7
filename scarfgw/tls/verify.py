"""Domain ownership: the TXT record a domain's owner publishes before scarfgw orders a
certificate for it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from twisted.names import client, dns
from twisted.names import error as dns_error

from scarfgw.rules.request import normalize_domain

RECORD_PREFIX = "_scarfgw-challenge."
VALUE_PREFIX = "scarfgw-verification="


def record_name(domain: str) -> str:
    """The DNS name holding the ownership TXT record of ``domain``."""
    return RECORD_PREFIX + normalize_domain(domain)


def expected_value(secret: str, domain: str) -> str:
    """``scarfgw-verification=<hex HMAC-SHA256(secret, lower-cased domain)[:32]>``."""
    digest = hmac.new(
        secret.encode("utf-8"), normalize_domain(domain).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return VALUE_PREFIX + digest[:32]


class OwnershipCheck:
    """Looks up ``_scarfgw-challenge.<domain>`` and compares it with the expected value."""

    TIMEOUTS = (1, 3, 5)

    def __init__(self, reactor: Any, secret: str, resolver: str | None) -> None:
        self.secret = secret
        if resolver:
            host, _, port = resolver.rpartition(":")
            self.resolver = client.Resolver(servers=[(host.strip("[]"), int(port))],
                                            reactor=reactor)
        else:
            self.resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)

    async def check(self, domain: str) -> bool:
        """True when one TXT string of the record is the expected value.

        A missing record (NXDOMAIN, no TXT) is False; other DNS failures raise
        :class:`twisted.names.error.DomainError` subclasses or a timeout.
        """
        try:
            answers, _, _ = await self.resolver.lookupText(record_name(domain), self.TIMEOUTS)
        except dns_error.DNSNameError:
            return False
        expected = expected_value(self.secret, domain).encode("ascii")
        values = [b"".join(rr.payload.data) for rr in answers if rr.type == dns.TXT]
        return any(hmac.compare_digest(value, expected) for value in values)
