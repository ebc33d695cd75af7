"""Listening endpoint strings (Twisted's, as in ``listen``): checked without listening, and
``tcp:``/``tcp6:`` ones parsed into the address they listen on, the URL that reaches them
from this machine, and the listen backlog they ask for.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.endpoints import serverFromString

_UNESCAPED_COLON = re.compile(r"(?<!\\):")
DEFAULT_BACKLOG = 1024
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})
"""Interfaces meaning every address: such a listener is reached on 127.0.0.1 (an IPv6
wildcard socket takes IPv4 too)."""


def validate_endpoint(spec: str) -> None:
    """Parse a Twisted server endpoint string as ``twistd`` would, without listening; raise
    ValueError naming the problem (unknown type, bad port or option)."""
    try:
        endpoint: Any = serverFromString(None, spec)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"not a usable Twisted endpoint string {spec!r}: {exc}") from None
    port = getattr(endpoint, "_port", 0)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"not a usable Twisted endpoint string {spec!r}: port {port} is out "
                         "of range")


@dataclass(frozen=True)
class TCPAddress:
    """Where a ``tcp:``/``tcp6:`` endpoint string listens."""

    family: int
    interface: str
    port: int
    backlog: int


def parse_tcp_endpoint(spec: str) -> TCPAddress:
    """``tcp:PORT[:interface=IF][:backlog=N]`` (or ``tcp6:``) as an address.

    Raises ValueError for any other endpoint type or option.
    """
    kind, *parts = (part.replace("\\:", ":") for part in _UNESCAPED_COLON.split(spec))
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"only tcp: and tcp6: endpoints can be shared by workers, not {kind}:")
    options: dict[str, str] = {}
    port_text = ""
    for part in parts:
        name, equals, value = part.partition("=")
        if not equals and not port_text:
            port_text = name
        else:
            options[name if equals else "port"] = value
    port_text = options.pop("port", port_text)
    interface = options.pop("interface", "::" if kind == "tcp6" else "0.0.0.0")
    backlog = options.pop("backlog", str(DEFAULT_BACKLOG))
    if options or not port_text.isdigit() or not backlog.isdigit():
        raise ValueError(f"cannot share {spec!r}: expected tcp:PORT[:interface=IF][:backlog=N]")
    family = socket.AF_INET6 if kind == "tcp6" or ":" in interface else socket.AF_INET
    return TCPAddress(family, interface, int(port_text), int(backlog))


def listener_url(endpoint: str) -> str | None:
    """``http://host:port`` that reaches a ``tcp:``/``tcp6:`` listener from this machine
    (None for other endpoint kinds or port 0, which no other process can know)."""
    try:
        address = parse_tcp_endpoint(endpoint)
    except ValueError:
        return None
    if address.port == 0:
        return None
    host = "127.0.0.1" if address.interface in _WILDCARDS else address.interface
    authority = f"[{host}]" if ":" in host else host
    return f"http://{authority}:{address.port}"


def with_backlog(spec: str, backlog: int) -> str:
    """``spec`` with ``:backlog=BACKLOG`` added when it is a ``tcp:``/``tcp6:`` endpoint that
    names none (Twisted's own default is 50: a burst of connects then waits on SYN
    retransmits); other endpoint strings are returned as they are."""
    kind, *parts = _UNESCAPED_COLON.split(spec)
    if kind not in ("tcp", "tcp6") or any(part.startswith("backlog=") for part in parts):
        return spec
    return f"{spec}:backlog={backlog}"
