"""The optional access log: one log event per finished request (or a random sample of them).

Events go through ``twisted.logger`` under the namespace ``scarfgw.access``, so they end up
wherever twistd logs: text lines with ``--logfile``, JSON objects with
``--logger=scarfgw.ops.logging.json_logger`` (fields ``method``, ``host``, ``path``, ``status``,
``sent_bytes``, ``duration_ms``, ``kind``, ``user_agent``, ``network``). As in analytics
events, the client address is only written as its network (/24 IPv4, /48 IPv6). The
gateway keeps no ``AccessLog`` when the log is off, so a disabled log costs one ``is None``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from twisted.logger import Logger

from scarfgw.ops.formats import origin_network

_FORMAT: Final = "{method} {host}{path} {status} {sent_bytes} B {duration_ms} ms ({kind})"


class AccessLog:
    """Logs finished requests; with ``sample`` below 1, that fraction of them at random."""

    def __init__(self, sample: float = 1.0, *, log: Logger | None = None,
                 draw: Callable[[], float] = random.random) -> None:
        if not 0 < sample <= 1:
            raise ValueError(f"access_log.sample: expected 0 < sample <= 1, got {sample!r}")
        self._sample = sample
        self._log = log or Logger(namespace="scarfgw.access")
        self._draw = draw

    def record(self, *, method: str, host: str, path: str, status: int, sent_bytes: int,
               duration: float, kind: str, user_agent: str | None, client_ip: str | None
               ) -> None:
        """Log one finished request (``duration`` in seconds), unless sampled out."""
        if self._sample < 1 and self._draw() >= self._sample:
            return
        self._log.info(_FORMAT, method=method, host=host, path=path, status=status,
                       sent_bytes=sent_bytes, duration_ms=round(duration * 1000, 3), kind=kind,
                       user_agent=user_agent, network=origin_network(client_ip))
