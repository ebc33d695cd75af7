"""The request view the rules see: method, routing host, raw path/query, headers, body prefix."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote, unquote_to_bytes

from scarfgw.rules.query import QueryEntry, parse_query


def decode_segments(raw_path: str) -> tuple[str, ...]:
    """WAI ``pathInfo``: drop one leading ``/``, split on ``/``, percent-decode each piece.

    ``""`` and ``"/"`` give ``()``; empty pieces are kept; ``+`` stays ``+``; malformed
    escapes stay literal; invalid UTF-8 becomes U+FFFD.
    """
    path = raw_path[1:] if raw_path[:1] == "/" else raw_path
    if not path:
        return ()
    pieces = path.split("/")
    if "%" not in path:
        return tuple(pieces)
    return tuple(_decode_piece(piece) for piece in pieces)


_DOT_SEGMENTS = frozenset({".", ".."})


def has_dot_segment(path: str) -> bool:
    """True when ``path`` has a ``.`` or ``..`` segment once percent-decoded (``%2e%2e``,
    ``..%2f``), ``\\`` counting as ``/`` as URL parsers do in http(s) URLs: a server or
    client resolving it would leave the path it seems to be under."""
    if "." not in path and "%" not in path:
        return False
    decoded = unquote(path).replace("\\", "/")
    return not _DOT_SEGMENTS.isdisjoint(decoded.split("/"))


def _decode_piece(piece: str) -> str:
    if "%" not in piece:
        return piece
    return unquote_to_bytes(piece).decode("utf-8", "replace")


_NAMES: dict[bytes, str] = {}
_NAMES_LIMIT = 512


def _header_name(raw: bytes) -> str:
    """``raw`` decoded (latin-1) and lower-cased, remembered for the next request (bounded:
    clients choose header names)."""
    name = raw.decode("latin-1").lower()
    if len(_NAMES) < _NAMES_LIMIT:
        _NAMES[raw] = name
    return name


class Headers:
    """Case-insensitive multi-valued header view (names stored lower-case, values in order).

    Built :meth:`from_pairs` (byte headers as received), a header's values are decoded
    (latin-1) only when first asked for: most requests look at a few headers, and only once.
    """

    __slots__ = ("_raw", "_values")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        values: dict[str, list[str]] = {}
        for name, value in pairs:
            values.setdefault(name.lower(), []).append(value)
        self._values = values
        self._raw: dict[str, list[bytes]] = {}

    @staticmethod
    def from_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Build from ``(name, value)`` byte pairs in the order received (names in any case,
        repeated names allowed), e.g. the fields an HTTP parser collected."""
        index: dict[str, list[bytes]] = {}
        names = _NAMES
        for name, value in pairs:
            index.setdefault(names.get(name) or _header_name(name), []).append(value)
        headers = Headers()  # compiled, a direct call (cls() went through type.__call__)
        headers._raw = index
        return headers

    def get(self, name: str) -> str | None:
        """The first value of ``name`` or ``None``."""
        values = self._values.get(name)
        if values is None:
            if name not in self._raw:
                return None
            values = self._decode(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in the order received."""
        values = self._values.get(name)
        if values is None:
            if name not in self._raw:
                return []
            values = self._decode(name)
        return values

    def _decode(self, name: str) -> list[str]:
        raw = self._raw[name]
        values = self._values[name] = (
            [raw[0].decode("latin-1")] if len(raw) == 1
            else [value.decode("latin-1") for value in raw]
        )
        return values

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._raw

    def items(self) -> Iterable[tuple[str, list[str]]]:
        """``(lower-case name, values)`` pairs."""
        if self._raw:
            return {name: self.get_all(name) for name in self._raw}.items()
        return self._values.items()


class RequestView:
    """What a rule may look at. Built once per request by the web shell.

    ``raw_query`` is the text after the first ``?`` without the ``?``; ``None`` when the
    target had no ``?``. ``host`` is the routing host: lower-cased, port stripped.
    ``body`` is at most the configured prefix of the request body. ``header(name)`` is the
    first value of a header (``name`` must be lower-case), or ``None``.
    """

    __slots__ = ("_parsed_query", "_segments", "body", "headers", "host", "method", "raw_path",
                 "raw_query")

    def __init__(
        self,
        method: str,
        host: str,
        raw_path: str,
        raw_query: str | None,
        headers: Headers,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.host = host
        self.raw_path = raw_path
        self.raw_query = raw_query
        self.headers = headers
        self.body = body
        self._segments: tuple[str, ...] | None = None
        self._parsed_query: list[QueryEntry] | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or ``None``. A method: compiled,
        rules call it directly (a bound ``headers.get`` kept per view went through the
        generic call path: 1.8k instructions per docker redirect)."""
        return self.headers.get(name)

    @property
    def segments(self) -> tuple[str, ...]:
        """The decoded path segments (:func:`decode_segments`, computed once, when asked)."""
        segments = self._segments
        if segments is None:
            segments = self._segments = decode_segments(self.raw_path)
        return segments

    @property
    def query_with_mark(self) -> str:
        """The raw query string with its leading ``?``, or ``""`` when there is none."""
        return "" if self.raw_query is None else "?" + self.raw_query

    @property
    def parsed_query(self) -> list[QueryEntry]:
        """http-types ``parseQuery`` of the raw query (computed once)."""
        if self._parsed_query is None:
            self._parsed_query = parse_query(self.raw_query or "")
        return self._parsed_query


def normalize_domain(name: str) -> str:
    """The one spelling of a domain name, for routing and TLS alike: lower-case, without the
    trailing dot of a fully qualified name (``CR.Example.com.`` is ``cr.example.com``)."""
    domain = name.lower()
    return domain[:-1] if domain.endswith(".") else domain


def routing_host(host_header: str) -> str:
    """The domain a Host value names (:func:`normalize_domain`), its port stripped; IPv6
    literals keep their brackets."""
    host = host_header.strip()
    if host.startswith("["):
        end = host.find("]")
        return (host[: end + 1] if end != -1 else host).lower()
    colon = host.find(":")
    return normalize_domain(host if colon == -1 else host[:colon])
