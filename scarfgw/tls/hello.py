"""Read the ALPN protocols a TLS ClientHello offers, before OpenSSL processes it.

The ``ssl`` module's servername callback cannot see the ALPN offer, but a TLS-ALPN-01
challenge certificate must only go to clients offering ``acme-tls/1`` (RFC 8737 section 3),
so the listener peeks at the first record itself.
"""

from __future__ import annotations

HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 0x01
ALPN_EXTENSION = 16
MAX_HELLO_BYTES = 5 + 16384


class _Truncated(Exception):
    """The buffer ends inside the structure being read."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise _Truncated
        chunk = self.data[self.offset:end]
        self.offset = end
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.number(length_size)))

    def done(self) -> bool:
        return self.offset >= len(self.data)


def offered_alpn(data: bytes) -> tuple[bytes, ...] | None:
    """The ALPN protocols of the ClientHello at the start of ``data``.

    ``None`` while the first record is incomplete; ``()`` when there is no ALPN extension or
    the bytes are not a ClientHello (OpenSSL then rejects them on its own).
    """
    try:
        record = _Reader(data)
        if record.number(1) != HANDSHAKE_RECORD:
            return ()
        record.take(2)
        hello = record.vector(2)
    except _Truncated:
        return None
    try:
        if hello.number(1) != CLIENT_HELLO:
            return ()
        body = hello.vector(3)
        body.take(2 + 32)
        body.vector(1)
        body.vector(2)
        body.vector(1)
        extensions = body.vector(2)
        while not extensions.done():
            kind = extensions.number(2)
            content = extensions.vector(2)
            if kind == ALPN_EXTENSION:
                names = content.vector(2)
                protocols = []
                while not names.done():
                    protocols.append(names.vector(1).data)
                return tuple(protocols)
    except _Truncated:
        return ()
    return ()
