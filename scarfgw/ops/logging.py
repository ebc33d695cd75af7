"""Structured logs: one JSON object per line on stdout, for ``twistd --logger``.

Run ``twistd -n --logger=scarfgw.ops.logging.json_logger scarfgw --config scarfgw/etc/scarfgw.yaml``
(``--logger`` overrides ``--logfile``/``--syslog``). Each line is a JSON object without a
record separator (unlike Twisted's ``jsonFileLogObserver`` default, RFC 7464), ready for
journald, Loki, Vector or ``jq``::

    {"time": "2026-11-22T10:00:00.123Z", "level": "info", "namespace": "scarfgw.runtime.service",
     "message": "SIGHUP received"}

``time`` is UTC with milliseconds; ``level`` is debug, info, warn, error or critical;
``message`` is the formatted text. The event's own fields (``path``, ``error``, ``sink``,
``count``, ...) follow as top-level keys, values JSON cannot hold as their ``repr`` (all
are left out if they still cannot be serialised); a logged failure adds ``traceback``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, Logger, LogLevel, formatEvent
from twisted.python.failure import Failure

from scarfgw.ops.formats import format_time

_LEGACY_KEYS = frozenset({"message", "isError", "system", "time", "why", "failure", "format"})


def event_as_json_line(event: LogEvent) -> str:
    """One log event as a JSON object followed by a newline."""
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": format_time(event.get("log_time", 0.0)),
        "level": getattr(level, "name", None),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    fields = {key: value for key, value in event.items()
              if not key.startswith("log_") and key not in _LEGACY_KEYS and key not in record}
    try:
        return json.dumps(record | fields, default=repr, ensure_ascii=False) + "\n"
    except (TypeError, ValueError):
        return json.dumps(record, default=repr, ensure_ascii=False) + "\n"


def json_logger() -> ILogObserver:
    """The observer factory for ``twistd --logger=scarfgw.ops.logging.json_logger``."""
    observer: ILogObserver = FileLogObserver(sys.stdout, event_as_json_line)
    return observer


class FailureLog:
    """Logs a failure met while answering a request: with its traceback the first time its
    kind (exception type and the line that raised it) is seen, then as one warning line, so
    a client that can trigger a bug cannot flood the log. Each line names the request id."""

    LIMIT = 256
    """Kinds remembered; past it every failure is one warning line."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self.seen: set[tuple[str, str, int]] = set()

    def record(self, failure: Failure, request_id: str, what: str, **fields: object) -> None:
        """Log ``failure`` of ``what`` (a format string over ``fields``)."""
        frames = failure.frames
        name, file, line = frames[-1][:3] if frames else ("", "", 0)
        kind = (getattr(failure.type, "__name__", ""), f"{file}:{name}", int(line))
        if kind not in self.seen and len(self.seen) < self.LIMIT:
            self.seen.add(kind)
            self.logger.failure(what + " (request {request_id})", failure, LogLevel.error,
                                request_id=request_id, **fields)
            return
        self.logger.warn(what + ": {error} (request {request_id})",
                         error=repr(failure.value)[:200], request_id=request_id, **fields)
