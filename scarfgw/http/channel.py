"""HTTP/1.1 server protocol of the gateway listeners.

Requests are parsed by llhttp (through ``httptools``: strict, so smuggling shapes such as
Content-Length beside Transfer-Encoding are refused) and answered one at a time per
connection, in order; pipelined requests wait their turn with reading paused. A response
is written straight to the transport, head and body in one write when the whole answer is
known. The channel is the producer of its connection's output: once more than the
transport's buffer size (64 KiB) waits unsent, no further request is answered and reading
pauses until it drained, so a client that sends without reading holds no more than that.

Limits answer clearly: header fields over :data:`MAX_FIELD_BYTES`, a header block over
:data:`MAX_HEAD_BYTES` or :data:`MAX_HEADERS` fields get 431, a target over
:data:`MAX_TARGET_BYTES` 414, a body over the configured limit 413 (at once, then the
connection closes), anything unparsable 400. One sweep per listener cuts connections that
stayed idle (empty lines are not activity), took longer than the factory's timeout to send a
request, or did not read any of their pending response for that long (counted from when
output last moved); a sweep that fails is logged and started again. A listener holds at most
``max_connections``: one more is closed at once.
"""

from __future__ import annotations

import fcntl
import re
import socket
import struct
import termios
from collections import deque
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final, cast

import httptools
from twisted.internet import defer, tcp
from twisted.internet.interfaces import IAddress, IPushProducer, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from scarfgw.ops import metrics

_log: Final = Logger(namespace=__name__)  # compiled code has no frame to name it by

TLS_HANDSHAKE_RECORD: Final = 0x16
MAX_FIELD_BYTES: Final = 16 * 1024
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 100
MAX_TARGET_BYTES: Final = 16 * 1024
PARSE_SLICE: Final = 16 * 1024
SWEEP_MAX_INTERVAL: Final = 5.0
"""Seconds between timeout sweeps at most: a connection is cut at most this late."""
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINE_ENDS: Final = (b"\r", b"\n", b"")
_NO_CONTENT: Final = b"Content-Length: 0\r\n"
_PHRASE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CR: Final = 0x0D
_LF: Final = 0x0A
"""CR and LF as byte values: ``_CR in data`` is one ``memchr``, where ``b"\\r" in data`` first
tries its operand as an integer (CPython 3.11 formats a TypeError and drops it: about 2k
instructions per test, 3 % of a keep-alive redirect for the two)."""


class _StopReading(Exception):
    """Raised in a parser callback: the rest of the connection's bytes are not parsed."""


class _Refused(Exception):
    """A request the channel answers itself (limits, parse errors) and then closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_status_lines: Final[dict[int, bytes]] = {}


def status_line(status: int, phrase: bytes | None = None) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n``: the given phrase if it is a valid reason phrase
    (no CR, LF or other control bytes), else the standard one."""
    if phrase is not None and _PHRASE.fullmatch(phrase):
        return b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    line = _status_lines.get(status)
    if line is None:
        try:
            known = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            known = b"Unknown"
        line = _status_lines[status] = b"HTTP/1.1 %d %s\r\n" % (status, known)
    return line


def _is_field(name: bytes, lowered: bytes) -> bool:
    """``name`` is the field ``lowered`` in any letter case; the lengths are compared first,
    as most names are not the one looked for and ``lower()`` allocates."""
    return len(name) == len(lowered) and name.lower() == lowered


def _head_fields(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[bytes], int | None]:
    """Header lines, CR and LF in values made spaces (no response splitting), and the
    Content-Length among them, if any."""
    fields = []
    length = None
    for name, value in headers:
        if _CR in value or _LF in value:
            value = value.replace(b"\r", b" ").replace(b"\n", b" ")
        elif _is_field(name, b"content-length") and value.strip().isdigit():
            length = int(value)
        fields.append(b"".join((name, b": ", value, b"\r\n")))
    return fields, length


class DateHeader:
    """The ``Date`` header line, formatted at most once per second of ``clock``."""

    def __init__(self, clock: Any) -> None:
        self.now: Callable[[], float] = clock.seconds
        self.second = -1
        self.line = b""

    def current(self) -> bytes:
        """``Date: ...\r\n`` for now (formatted once per second)."""
        second = int(self.now())
        if second != self.second:
            self.second = second
            self.line = b"Date: " + formatdate(second, usegmt=True).encode("ascii") + b"\r\n"
        return self.line


class GatewayRequest:
    """One parsed request and the means to answer it.

    ``header_pairs`` are the header fields as received (name, value) in order; ``body``
    holds at most the listener's ``max_body_bytes`` (``body_too_large`` says it was more).
    Answer with :meth:`respond` (a whole response) or :meth:`start`, :meth:`write`,
    :meth:`finish` (a streamed one).
    """

    __slots__ = ("_body_parts", "_chunked", "_finish_waiters", "_length_left", "accounted",
                 "body_too_large", "channel", "client_host", "disconnected", "finished",
                 "header_pairs", "keep_alive", "method", "sentLength", "startedWriting", "uri",
                 "version")

    def __init__(self, channel: GatewayChannel, method: bytes, uri: bytes,
                 header_pairs: list[tuple[bytes, bytes]], version: str, keep_alive: bool) -> None:
        self.channel = channel
        self.method = method
        self.uri = uri
        self.header_pairs = header_pairs
        self.version = version
        self.keep_alive = keep_alive
        self.client_host = channel.peer_host
        self._body_parts: list[bytes] = []
        self.body_too_large = False
        self.accounted = False
        """Set once the gateway has counted the finished request (metrics, in-flight)."""
        self.startedWriting = False
        self.finished = False
        self.disconnected = False
        self.sentLength = 0
        self._chunked = False
        self._length_left: int | None = None
        self._finish_waiters: list[defer.Deferred[None]] | None = None

    @property
    def body(self) -> bytes:
        """The request body received (at most the listener's limit)."""
        return b"".join(self._body_parts)

    @property
    def body_complete(self) -> bool:
        """True once the response is finished with every byte its Content-Length announced
        (False while it is not, and for one cut off)."""
        return self.finished and not self._length_left

    @property
    def transport(self) -> Any:
        """The connection's transport."""
        return self.channel.transport

    @property
    def body_limit(self) -> int:
        """The most body bytes this request's listener accepts."""
        return self.channel.factory.max_body_bytes

    def isSecure(self) -> bool:
        """True on the https listener."""
        return self.channel.factory.tls

    def close_connection(self) -> None:
        """Close the connection after this response (``Connection: close`` is sent)."""
        self.keep_alive = False

    def respond(self, status: int, headers: Iterable[tuple[bytes, bytes]] = (),
                body: bytes = b"") -> None:
        """Send a whole response: status, headers (Content-Length added unless given, or the
        status is 1xx, 204 or 304), body. For HEAD, and for 204/304, no body bytes are sent.
        """
        if self.disconnected or self.finished:
            return
        fields, length = _head_fields(headers)
        if length is None and status >= 200 and status not in _NO_BODY_STATUSES:
            fields.append(b"Content-Length: %d\r\n" % len(body) if body else _NO_CONTENT)
        fields.append(b"\r\n")
        if not (self.method == b"HEAD" or status in _NO_BODY_STATUSES):
            fields.append(body)
            self.sentLength = len(body)
        self._send_head(status, None, fields)
        self._done()

    def respond_text(self, status: int, message: str) -> None:
        """Send a whole plain-text response: ``message`` and a newline."""
        self.respond(status, [(b"Content-Type", b"text/plain; charset=utf-8")],
                     message.encode() + b"\n")

    def start(self, status: int, headers: Iterable[tuple[bytes, bytes]],
              phrase: bytes | None = None) -> None:
        """Send the head of a streamed response; the body follows by :meth:`write`.

        The body is framed by its Content-Length when one is given, else chunked (HTTP/1.1
        clients) or ended by closing the connection (HTTP/1.0).
        """
        fields, self._length_left = _head_fields(headers)
        if self.method == b"HEAD" or status in _NO_BODY_STATUSES or status < 200:
            self._length_left = 0
        elif self._length_left is None:
            if self.version == "1.1":
                self._chunked = True
                fields.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False
        fields.append(b"\r\n")
        self._send_head(status, phrase, fields)

    def _send_head(self, status: int, phrase: bytes | None, fields: list[bytes]) -> None:
        self.startedWriting = True
        channel = self.channel
        if channel.last_response(self):
            closing = b"Connection: close\r\n"
        else:
            closing = b"Connection: keep-alive\r\n" if self.version == "1.0" else b""
        channel.send(b"".join([status_line(status, phrase), channel.factory.date.current(),
                               closing, *fields]))

    def write(self, data: bytes) -> None:
        """Send body bytes of a streamed response (dropped once the client is gone)."""
        if self.disconnected or self.finished or not data:
            return
        left = self._length_left
        if left is not None:
            if left <= 0:
                return
            if len(data) > left:
                data = data[:left]
            self._length_left = left - len(data)
        self.sentLength += len(data)
        if self._chunked:
            self.transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.channel.send(data)

    def finish(self) -> None:
        """End a streamed response."""
        if self.disconnected or self.finished:
            return
        if self._chunked:
            self.transport.write(b"0\r\n\r\n")
        elif self._length_left:
            self.keep_alive = False
        self._done()

    def _done(self) -> None:
        self.finished = True
        self._fire_waiters(None)
        self.channel.request_done(self)

    def notifyFinish(self) -> defer.Deferred[None]:
        """Fires when the response is finished; errbacks if the client goes away first."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self.finished:
            waiter.callback(None)
        elif self.disconnected:
            waiter.errback(Failure(ConnectionError("client went away")))
        else:
            if self._finish_waiters is None:
                self._finish_waiters = []
            self._finish_waiters.append(waiter)
        return waiter

    def _fire_waiters(self, reason: Failure | None) -> None:
        waiters, self._finish_waiters = self._finish_waiters, None
        for waiter in waiters or ():
            if reason is None:
                waiter.callback(None)
            else:
                waiter.errback(reason)

    def connection_lost(self, reason: Failure) -> None:
        """The client went away before the response finished."""
        self.disconnected = True
        self._fire_waiters(reason)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Let the client connection pause and resume ``producer`` (a streamed body)."""
        self.channel.attach_body_producer(producer)

    def unregisterProducer(self) -> None:
        """Detach the producer registered by :meth:`registerProducer`."""
        self.channel.attach_body_producer(None)

    def abort(self) -> None:
        """Cut the client off (a response cannot be completed)."""
        self.transport.abortConnection()


def _kernel_unsent(sock: socket.socket) -> int:
    """Bytes in the socket's send queue the peer has not acknowledged (Linux ``TIOCOUTQ``;
    0 where that cannot be asked)."""
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, AttributeError, ValueError):
        return 0
    return int(struct.unpack("i", answer)[0])


def _queued(connection: Any) -> int:
    """Bytes a TCP transport holds in Twisted's buffers, not yet given to the kernel."""
    return int(len(connection.dataBuffer) - connection.offset + connection._tempDataLen)


class _OutputProgress:
    """Where a connection's unsent output stood at the last sweep: what changes only when
    bytes leave (Twisted's buffer identity and offset, the kernel's unsent count going
    down), and since when it has not."""

    __slots__ = ("buffer", "kernel", "offset", "since")

    def __init__(self, buffer: int, offset: int, kernel: int, since: float) -> None:
        self.buffer = buffer
        self.offset = offset
        self.kernel = kernel
        self.since = since

    def moved(self, buffer: int, offset: int, kernel: int, now: float) -> bool:
        """Take the current state; True when some bytes left since the last one (responses
        queued meanwhile do not count)."""
        moved = buffer != self.buffer or offset != self.offset or kernel < self.kernel
        self.buffer, self.offset, self.kernel = buffer, offset, kernel
        if moved:
            self.since = now
        return moved


def _tcp_of(transport: object) -> tcp.Connection | None:
    """The TCP connection under ``transport`` (itself, or the one under TLS)."""
    tcp_transport = transport if isinstance(transport, tcp.Connection) else getattr(
        transport, "transport", None)
    return tcp_transport if isinstance(tcp_transport, tcp.Connection) else None


def sends_directly(transport: object) -> bool:
    """True for a plain (not TLS) TCP transport with the buffers :func:`send_directly`
    looks at."""
    return (isinstance(transport, tcp.Connection) and not transport.TLS
            and hasattr(transport, "_tempDataLen"))


def send_directly(transport: Any, data: bytes) -> None:
    """Write ``data`` on a TCP transport that :func:`sends_directly`: with nothing queued,
    straight to the socket.

    Twisted's ``write`` only queues, and the bytes leave on the reactor's next turn (a
    writer registration and another poll per response). Sending at once saves that; what
    the socket does not take, and everything while bytes are queued, goes through
    ``write`` so the order and Twisted's flow control stay as they are.
    """
    if transport.connected and not transport.disconnecting and not _queued(transport):
        try:
            sent: int = transport.socket.send(data)
        except OSError:
            sent = 0  # full, interrupted or broken: ``write`` queues it, or reports the loss
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class GatewayChannel(Protocol):
    """One client connection: parses requests and hands each, in turn, to the gateway.

    Closes at once when a plain-HTTP listener receives a TLS ClientHello, so clients that
    probe TLS first (skopeo, containerd) fall back to HTTP without a stall.
    """

    factory: GatewayFactory

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.peer_host: str | None = None
        self.closing = False
        self.current: GatewayRequest | None = None
        self.waiting: deque[GatewayRequest | _Refused] = deque()
        self.unparsed = b""
        self.paused = False
        self.first_data = True
        self.last_activity = 0.0
        self.receiving_since: float | None = None
        self.continue_pending = False
        self.direct = False
        self.advancing = False
        self.lost = False
        self._began_in_feed = False
        self.output_blocked = False
        self.body_producer: IPushProducer | None = None
        self._output: _OutputProgress | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._target: list[bytes] = []
        self._target_bytes = 0
        self._fields: list[tuple[bytes, bytes]] = []
        self._field_bytes = 0
        self._head_bytes = 0
        self._message: GatewayRequest | None = None
        self._body_budget = 0

    def connectionMade(self) -> None:
        """Count the connection, note the peer address, become the output's producer."""
        factory = self.factory
        metrics.connection_opened(factory.connections)
        factory.channels.add(self)
        self.last_activity = factory.now()
        transport: Any = self.transport
        self.peer_host = getattr(transport.getPeer(), "host", None)
        self.direct = sends_directly(transport)
        transport.registerProducer(self, True)

    # the output's producer (IPushProducer): the transport pauses it when its buffer is full

    def pauseProducing(self) -> None:
        """Unsent output passed the transport's buffer size: answer nothing more, and
        pause a streamed body."""
        self.output_blocked = True
        if self.body_producer is not None:
            self.body_producer.pauseProducing()

    def resumeProducing(self) -> None:
        """The output drained: go on answering (and streaming)."""
        self.output_blocked = False
        if self.body_producer is not None:
            self.body_producer.resumeProducing()
        if not self.lost:
            self._advance()

    def stopProducing(self) -> None:
        """The connection is gone: stop a streamed body."""
        if self.body_producer is not None:
            self.body_producer.stopProducing()

    def attach_body_producer(self, producer: IPushProducer | None) -> None:
        """Let ``producer`` (a streamed body) be paused with the output; ``None`` detaches."""
        self.body_producer = producer
        if producer is not None and self.output_blocked:
            producer.pauseProducing()

    def send(self, data: bytes) -> None:
        """Write ``data``; on plain TCP with nothing queued, straight to the socket
        (:func:`send_directly`)."""
        if self.direct:
            send_directly(self.transport, data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        """Take ``data``; parse and answer as far as the requests ahead of it allow."""
        if self.first_data:
            self.first_data = False
            if data and data[0] == TLS_HANDSHAKE_RECORD and not self.factory.tls:
                cast(ITCPTransport, self.transport).abortConnection()
                return
        if self.closing:
            return
        if data[:1] not in _LINE_ENDS or data.strip(b"\r\n"):
            self.last_activity = self.factory.now()  # empty lines are not activity
        self.unparsed = self.unparsed + data if self.unparsed else data
        self._advance()

    def _feed(self, chunk: bytes) -> None:
        """Parse ``chunk``; complete requests join ``waiting``, problems a refusal."""
        self._began_in_feed = False
        try:
            self.parser.feed_data(chunk)
            if (self.receiving_since is not None and self._message is None
                    and not self._began_in_feed):
                self._head_bytes += len(chunk)
                if self._head_bytes > MAX_HEAD_BYTES:
                    raise _Refused(431, "request header fields too large")
        except _Refused as refused:
            self._refuse(refused)
        except httptools.HttpParserCallbackError as error:
            context = error.__context__
            if isinstance(context, _Refused):
                self._refuse(context)
            elif not isinstance(context, _StopReading):
                raise
        except httptools.HttpParserUpgrade:
            self._upgraded()
        except httptools.HttpParserError as error:
            self._refuse(_Refused(400, f"bad request: {error}"))

    def _refuse(self, refused: _Refused) -> None:
        self.closing = True
        self.waiting.append(refused)

    def _upgraded(self) -> None:
        """llhttp stops after a request asking for ``Upgrade``: answer it, then close. One
        that also carries a body was handed over without it, so it is refused instead."""
        self.closing = True
        last = self.waiting[-1] if self.waiting else None
        if isinstance(last, GatewayRequest) and any(
            (_is_field(name, b"content-length") and value.strip() not in (b"", b"0"))
            or _is_field(name, b"transfer-encoding") for name, value in last.header_pairs
        ):
            self.waiting[-1] = _Refused(400, "Upgrade with a request body is not supported")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.receiving_since = self.factory.now()
        self._began_in_feed = True

    def on_url(self, part: bytes) -> None:
        self._target_bytes += len(part)
        if self._target_bytes > MAX_TARGET_BYTES:
            raise _Refused(414, "request target too long")
        self._target.append(part)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._message is not None:
            return  # a trailer field of a chunked body: not part of the request head
        size = len(name) + len(value)
        if size > MAX_FIELD_BYTES:
            raise _Refused(431, "request header field too large")
        self._field_bytes += size
        fields = self._fields
        if len(fields) >= MAX_HEADERS or self._field_bytes > MAX_HEAD_BYTES:
            raise _Refused(431, "request header fields too large")
        fields.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        target = self._target[0] if len(self._target) == 1 else b"".join(self._target)
        request = GatewayRequest(self, parser.get_method(), target, self._fields,
                                 parser.get_http_version(), parser.should_keep_alive())
        self._message = request
        limit = self.factory.max_body_bytes
        self._body_budget = limit
        expects_continue = False
        for name, value in self._fields:
            if _is_field(name, b"content-length") and value.isdigit() and int(value) > limit:
                self._too_large(request)
            if _is_field(name, b"expect") and value.lower() == b"100-continue":
                expects_continue = True
        self.continue_pending = expects_continue and request.version == "1.1"

    def _too_large(self, request: GatewayRequest) -> None:
        """Hand the request over now, marked too large; read nothing more on this connection."""
        request.body_too_large = True
        request.keep_alive = False
        self.waiting.append(request)
        self._reset_message()
        self.receiving_since = None
        self.continue_pending = False
        self.closing = True
        raise _StopReading()

    def on_body(self, data: bytes) -> None:
        request = self._message
        if request is None:
            return
        if len(data) > self._body_budget:
            self._too_large(request)
        self._body_budget -= len(data)
        request._body_parts.append(data)

    def on_message_complete(self) -> None:
        request = self._message
        if request is not None:
            self.waiting.append(request)
        self.receiving_since = None
        self.continue_pending = False
        self._reset_message()

    # answering

    def _advance(self) -> None:
        """Answer waiting requests in order and parse more input while none waits; pause
        reading while there is a backlog.

        Input is parsed :data:`PARSE_SLICE` bytes at a time and only while no complete
        request waits, so a burst of pipelined requests is held as bytes, not as request
        objects; nothing is answered while the output is blocked. Requests answered at once
        are taken by this loop, not by recursion from :meth:`request_done`, so their number
        costs no stack.
        """
        if self.advancing:
            return
        self.advancing = True
        try:
            while not self.lost and not self.output_blocked:
                if self.current is None and self.waiting:
                    item = self.waiting.popleft()
                    if isinstance(item, _Refused):
                        self.waiting.clear()
                        self.unparsed = b""
                        self._answer_refused(item)
                        return
                    self.current = item
                    self.factory.handle(item)
                elif not self.waiting and self.unparsed and not self.closing:
                    chunk = self.unparsed[:PARSE_SLICE]
                    self.unparsed = self.unparsed[PARSE_SLICE:]
                    self._feed(chunk)
                else:
                    break
            if (self.continue_pending and self.current is None and not self.waiting
                    and not self.lost):
                self.continue_pending = False
                self.send(_CONTINUE)
        finally:
            self.advancing = False
        if self.lost:
            return
        backlog = (self.output_blocked or bool(self.waiting or self.unparsed)) and not self.closing
        if backlog and not self.paused:
            self.paused = True
            cast(IPushProducer, self.transport).pauseProducing()
        elif not backlog and self.paused:
            self.paused = False
            if self.receiving_since is not None:
                self.receiving_since = self.factory.now()
            cast(IPushProducer, self.transport).resumeProducing()

    def _answer_refused(self, refused: _Refused) -> None:
        """Answer a refusal as the connection's last response (it then closes)."""
        self.current = GatewayRequest(self, b"", b"", [], "1.1", keep_alive=False)
        self.current.respond_text(refused.status, refused.message)
        metrics.count_request(refused.status, b"OTHER", "none")

    def request_done(self, request: GatewayRequest) -> None:
        """``request``'s response is complete: close, or go on with the next request."""
        if request is not self.current:
            return
        self.current = None
        if self.last_response(request):
            self.waiting.clear()
            self.close()
            return
        now = self.factory.now()
        self.last_activity = now
        if self.receiving_since is not None:
            self.receiving_since = now  # the client may have waited for this answer
        self._advance()

    def close(self) -> None:
        """Close once the pending output is sent (the channel stops producing it first: a
        transport does not close while it may resume a producer)."""
        self.closing = True
        transport: Any = self.transport
        transport.unregisterProducer()
        transport.loseConnection()

    def last_response(self, request: GatewayRequest) -> bool:
        """True when the connection closes after ``request``'s response."""
        return not request.keep_alive or (self.closing and not self.waiting)

    @property
    def idle(self) -> bool:
        """True between requests: nothing being answered, waiting, or partly received."""
        return self.current is None and not self.waiting and self.receiving_since is None

    def stale(self, now: float, timeout: float) -> bool:
        """True when the connection should be cut: pending output of which nothing left for
        ``timeout``, a request it has been sending for longer than that while nothing was
        answered, or no request for that long."""
        connection = _tcp_of(self.transport)
        kernel = _kernel_unsent(connection.socket) if connection is not None else 0
        if connection is not None and (kernel or _queued(connection)):
            buffer, offset = id(connection.dataBuffer), connection.offset
            progress = self._output
            if progress is None:
                self._output = _OutputProgress(buffer, offset, kernel, now)
                return False
            moved = progress.moved(buffer, offset, kernel, now)
            return not moved and now - progress.since > timeout
        self._output = None
        if self.current is not None or self.paused:
            return False
        if self.receiving_since is not None:
            return now - self.receiving_since > timeout
        return not self.waiting and now - self.last_activity > timeout

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Uncount the connection; tell a request still being answered."""
        factory = self.factory
        metrics.connection_closed(factory.connections)
        factory.channels.discard(self)
        self.lost = True
        self.closing = True
        self.waiting.clear()
        self.body_producer = None
        current, self.current = self.current, None
        if current is not None:
            current.connection_lost(reason)


class GatewayFactory(Factory):
    """Builds gateway channels for one listener (``listener`` names it in metrics)."""

    noisy = False

    def __init__(
        self,
        handle: Callable[[GatewayRequest], None],
        listener: str,
        max_body_bytes: int,
        clock: Any,
        tls: bool = False,
        timeout: float = 60.0,
        max_connections: int = 10_000,
    ) -> None:
        self.handle = handle
        self.listener = listener
        self.max_body_bytes = max_body_bytes
        self.tls = tls
        self.now: Callable[[], float] = clock.seconds
        """``clock.seconds``, looked up once (a method lookup on the reactor per reading
        was a fifth of a microsecond, six times per request)."""
        self.timeout = timeout
        self.max_connections = max_connections
        self.date = DateHeader(clock)
        self.channels: set[GatewayChannel] = set()
        self.connections = metrics.OPEN_CONNECTIONS.labels(listener)
        self.rejected = metrics.CONNECTIONS_REJECTED.labels(listener)
        self._sweep = LoopingCall(self.close_stale)
        self._sweep.clock = clock

    def buildProtocol(self, addr: IAddress | None) -> GatewayChannel | None:  # type: ignore[override]
        """A channel bound to this factory; ``None`` (the connection is closed at once) when
        ``max_connections`` are open."""
        if len(self.channels) >= self.max_connections:
            self.rejected.inc()
            return None
        channel = GatewayChannel()
        channel.factory = self
        return channel

    def startFactory(self) -> None:
        """Start sweeping idle connections."""
        interval = min(max(self.timeout / 4, 0.05), SWEEP_MAX_INTERVAL)
        self._sweep.start(interval, now=False).addErrback(self._sweep_failed)

    def _sweep_failed(self, failure: Failure) -> None:
        """Log what stopped the sweep and start it again: timeouts must not silently end."""
        _log.failure("timeout sweep of the {listener} listener failed; restarting it", failure,
                     listener=self.listener)
        self.startFactory()

    def stopFactory(self) -> None:
        """Stop sweeping."""
        if self._sweep.running:
            self._sweep.stop()

    def close_idle(self) -> None:
        """Close every connection that is between requests (used when draining: the client
        reconnects, to another instance, at once instead of on its next request)."""
        for channel in [c for c in self.channels if c.idle]:
            channel.close()

    def close_stale(self) -> None:
        """Cut the connections :meth:`GatewayChannel.stale` gives up on."""
        now = self.now()
        for channel in [c for c in self.channels if c.stale(now, self.timeout)]:
            cast(ITCPTransport, channel.transport).abortConnection()
