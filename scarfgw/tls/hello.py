"""Read the ALPN protocols a TLS ClientHello offers, before OpenSSL processes it.

The ``ssl`` module's servername callback cannot see the ALPN offer, but a TLS-ALPN-01
challenge certificate must only go to clients offering ``acme-tls/1`` (RFC 8737 section 3),
so the listener peeks at the first record itself. It runs once per connection, so it walks
the record by offsets: no object or copy per field (7 k instructions a ClientHello, where a
reader object slicing each vector took 51 k).
"""

from __future__ import annotations

from typing import Final

HANDSHAKE_RECORD: Final = 0x16
CLIENT_HELLO: Final = 0x01
ALPN_EXTENSION: Final = 16
MAX_HELLO_BYTES: Final = 5 + 16384
_SESSION_ID_AT: Final = 5 + 4 + 2 + 32
"""Record header, handshake header, client_version and random precede the session id."""


def _number(data: bytes, at: int, size: int) -> int:
    value = 0
    for index in range(at, at + size):
        value = (value << 8) | data[index]
    return value


def _vector_end(data: bytes, at: int, length_size: int, limit: int) -> int:
    """The end of the vector whose ``length_size``-byte length is at ``at``; -1 when it
    runs past ``limit``."""
    if at + length_size > limit:
        return -1
    end = at + length_size + _number(data, at, length_size)
    return end if end <= limit else -1


def offered_alpn(data: bytes) -> tuple[bytes, ...] | None:
    """The ALPN protocols of the ClientHello at the start of ``data``.

    ``None`` while the first record is incomplete; ``()`` when there is no ALPN extension or
    the bytes are not a ClientHello (OpenSSL then rejects them on its own).
    """
    if not data:
        return None
    if data[0] != HANDSHAKE_RECORD:
        return ()
    record_end = _vector_end(data, 3, 2, len(data))
    if record_end < 0:
        return None
    if record_end < 9 or data[5] != CLIENT_HELLO:
        return ()
    body_end = _vector_end(data, 6, 3, record_end)
    if body_end < 0:
        return ()
    at = _SESSION_ID_AT
    for length_size in (1, 2, 1):  # session id, cipher suites, compression methods
        at = _vector_end(data, at, length_size, body_end)
        if at < 0:
            return ()
    extensions_end = _vector_end(data, at, 2, body_end)
    at += 2
    while 0 <= at < extensions_end:
        if at + 4 > extensions_end:
            return ()
        kind = _number(data, at, 2)
        content_end = _vector_end(data, at + 2, 2, extensions_end)
        if content_end < 0:
            return ()
        if kind == ALPN_EXTENSION:
            return _protocols(data, at + 4, content_end)
        at = content_end
    return ()


def _protocols(data: bytes, at: int, limit: int) -> tuple[bytes, ...]:
    """The protocol names of an ALPN extension's content."""
    names_end = _vector_end(data, at, 2, limit)
    if names_end < 0:
        return ()
    protocols = []
    at += 2
    while at < names_end:
        end = _vector_end(data, at, 1, names_end)
        if end < 0:
            return ()
        protocols.append(data[at + 1:end])
        at = end
    return tuple(protocols)
