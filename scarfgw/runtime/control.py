"""What the primary and its workers tell each other.

The primary writes to a worker's stdin, as length-prefixed frames (:class:`ControlReceiver`):
the validated configuration documents with their generation (at start and on every reload),
and the domain of every certificate it stored. A worker answers on its stdout, between its
log lines, with one line per configuration it was handed (applied or refused) and one line
once it serves. The primary is the only process that reads the config file; a worker never
re-reads it and never polls the certificate storage.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.protocols.basic import Int32StringReceiver

from scarfgw.config import ConfigDocuments

READY_LINE = "scarfgw-worker-ready"
"""Printed by a worker once it serves its first configuration."""
_RESULT_PREFIX = "scarfgw-config "
MAX_FRAME_BYTES = 1 << 30
"""The largest frame accepted (a very large manifest still fits)."""


@dataclass(frozen=True)
class HandConfig:
    """Serve the configuration validated from ``documents`` as ``generation``."""

    generation: int
    documents: ConfigDocuments


@dataclass(frozen=True)
class CertificateStored:
    """The primary stored a certificate for ``domain``: load it from storage."""

    domain: str


Message = HandConfig | CertificateStored


@dataclass(frozen=True)
class ConfigResult:
    """A worker's answer to a :class:`HandConfig`: ``error`` is ``None`` when applied."""

    generation: int
    error: str | None = None


def encode(message: Message) -> bytes:
    """The frame body of ``message`` (from the primary, to its own child: trusted)."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Message:
    """Inverse of :func:`encode`; ValueError for anything that is not a message."""
    message = pickle.loads(data)  # written by the parent process only
    if not isinstance(message, HandConfig | CertificateStored):
        raise ValueError(f"not a control message: {type(message).__name__}")
    return message


def result_line(result: ConfigResult) -> str:
    """The stdout line reporting ``result`` to the primary."""
    outcome = "applied" if result.error is None else "refused " + result.error.replace("\n", " ")
    return f"{_RESULT_PREFIX}{result.generation} {outcome}"


def parse_result_line(line: str) -> ConfigResult | None:
    """The result a worker's stdout ``line`` reports, or ``None`` for a log line."""
    if not line.startswith(_RESULT_PREFIX):
        return None
    generation, _, outcome = line[len(_RESULT_PREFIX):].partition(" ")
    if not generation.isdigit():
        return None
    if outcome == "applied":
        return ConfigResult(int(generation))
    return ConfigResult(int(generation), outcome.removeprefix("refused ") or "refused")


class ControlReceiver(Int32StringReceiver):
    """A worker's stdin: frames from the primary, handed to ``receive``; ``ended`` is called
    when the primary closed the pipe (it is gone, or stopping)."""

    MAX_LENGTH = MAX_FRAME_BYTES

    def __init__(self, receive: Callable[[Message], None], ended: Callable[[], None]) -> None:
        self.receive = receive
        self.ended = ended

    def stringReceived(self, string: bytes) -> None:
        """Decode one frame and hand it on."""
        self.receive(decode(string))

    def connectionLost(self, reason: Any = None) -> None:
        """The primary closed our stdin."""
        self.ended()


def frame(message: Message) -> bytes:
    """``message`` framed for a worker's stdin (a 4-byte big-endian length, then the body)."""
    body = encode(message)
    return len(body).to_bytes(4, "big") + body
