"""Domain ownership: the TXT record a domain's owner publishes before scarfgw orders a
certificate for it."""

from __future__ import annotations

import hashlib
import hmac

RECORD_PREFIX = "_scarfgw-challenge."
VALUE_PREFIX = "scarfgw-verification="


def record_name(domain: str) -> str:
    """The DNS name holding the ownership TXT record of ``domain``."""
    return RECORD_PREFIX + domain.lower().rstrip(".")


def expected_value(secret: str, domain: str) -> str:
    """``scarfgw-verification=<hex HMAC-SHA256(secret, lower-cased domain)[:32]>``."""
    digest = hmac.new(
        secret.encode("utf-8"), domain.lower().rstrip(".").encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return VALUE_PREFIX + digest[:32]
