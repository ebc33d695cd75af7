"""The access log: what a line holds, no raw address, sampling."""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.logger import ILogObserver, Logger, formatEvent

from scarfgw.ops.accesslog import AccessLog

REQUEST: dict[str, Any] = {
    "method": "GET", "host": "cr.example.test", "path": "/v2/library/hello/manifests/latest",
    "status": 307, "sent_bytes": 0, "duration": 0.0012345, "kind": "docker",
    "user_agent": "docker/27.0", "client_ip": "203.0.113.77",
}


def _access_log(sample: float = 1.0, draws: list[float] | None = None
                ) -> tuple[AccessLog, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    values = iter(draws or [])
    observer = cast(ILogObserver, events.append)
    log = AccessLog(sample, log=Logger(namespace="scarfgw.access", observer=observer),
                    draw=lambda: next(values))
    return log, events


def test_one_event_per_request_without_the_address() -> None:
    access_log, events = _access_log()
    access_log.record(**REQUEST)
    [event] = events
    assert formatEvent(event) == (
        "GET cr.example.test/v2/library/hello/manifests/latest 307 0 B 1.234 ms (docker)")
    assert event["network"] == "203.0.113.0/24" and event["user_agent"] == "docker/27.0"
    assert "203.0.113.77" not in repr(event)


def test_sampling_keeps_draws_below_the_rate() -> None:
    access_log, events = _access_log(0.25, [0.1, 0.25, 0.9, 0.2499])
    for _ in range(4):
        access_log.record(**REQUEST)
    assert len(events) == 2


@pytest.mark.parametrize("sample", [0, -0.5, 1.5])
def test_sample_must_be_a_fraction(sample: float) -> None:
    with pytest.raises(ValueError, match=r"access_log\.sample"):
        AccessLog(sample)
