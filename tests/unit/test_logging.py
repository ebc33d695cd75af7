"""JSON log lines: one object per line, readable keys, the event's fields, tracebacks."""

from __future__ import annotations

import importlib
import json
from typing import Any, cast

import pytest
from twisted.logger import ILogObserver, Logger, LogLevel

from scarfgw.ops.logging import event_as_json_line


def _logged(emit: Any) -> list[str]:
    lines: list[str] = []
    observer = cast(ILogObserver, lambda event: lines.append(event_as_json_line(event)))
    emit(Logger(namespace="scarfgw.test", observer=observer))
    return lines


def test_one_object_per_line_with_fields() -> None:
    [line] = _logged(lambda log: log.warn("sink {sink} failed:\n{error}", sink="ch",
                                          error="refused", count=3))
    assert line.endswith("}\n") and line.count("\n") == 1 and "\x1e" not in line
    record = json.loads(line)
    assert record["time"].endswith("Z") and len(record["time"]) == 24
    assert (record["level"], record["namespace"]) == ("warn", "scarfgw.test")
    assert record["message"] == "sink ch failed:\nrefused"
    assert (record["sink"], record["error"], record["count"]) == ("ch", "refused", 3)
    assert not [key for key in record if key.startswith("log_")]


def test_failure_has_a_traceback() -> None:
    def emit(log: Logger) -> None:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.failure("routing failed for {path}", path="/v2/")

    [line] = _logged(emit)
    record = json.loads(line)
    assert (record["level"], record["message"]) == ("critical", "routing failed for /v2/")
    assert "ZeroDivisionError" in record["traceback"]


def test_values_json_cannot_hold() -> None:
    [line] = _logged(lambda log: log.info("x", address=("127.0.0.1", 80), obj=LogLevel.info,
                                          odd={(1, 2): "tuple key"}))
    record = json.loads(line)
    assert record["message"] == "x"
    assert "address" not in record and "odd" not in record

    [line] = _logged(lambda log: log.info("y", obj=object()))
    assert json.loads(line)["obj"].startswith("<object object at")


@pytest.mark.parametrize(("module", "name"), [
    ("scarfgw.gateway.gateway", "log"), ("scarfgw.analytics.writer", "_log")])
def test_compiled_modules_log_under_their_own_name(module: str, name: str) -> None:
    """Twisted names a Logger after the calling frame, which compiled code does not have:
    gateway failures and sink errors were logged as ``importlib._bootstrap``."""
    logger = getattr(importlib.import_module(module), name)
    assert logger.namespace == module
