"""The allocator tuning takes effect on glibc (the platform the gateway is deployed on)."""

from __future__ import annotations

import platform

from scarfgw.runtime.allocator import tune_allocator


def test_glibc_accepts_the_thresholds() -> None:
    assert platform.libc_ver()[0] == "glibc"
    assert tune_allocator() is True
