"""A small HTTP/1.1 client for the upstream: one origin, pooled keep-alive connections.

Why not ``aiohttp.ClientSession``: a proxied request goes to one configured origin, always
with a small JSON body, and its reply is read as it arrives. For that, aiohttp's general
client (URL handling, tracing, its reader and response objects) cost 71-86 µs of CPU per
request more than a bare protocol on the development machine, all of it on the path to the
first token; this module costs 24-28 µs more (``scripts/bench_http_client.py``).

``ResponseParser`` is the pure part (bytes in; the head, the body's bytes and its end out:
status line, headers, ``Content-Length``, chunked and close-delimited bodies, 1xx responses
skipped). ``ConnectionPool`` owns the sockets: at most ``limit`` requests at once, idle
connections reused (LIFO) until ``keepalive_s``, and a request that finds a reused
connection closed by the server before any byte of the answer is sent once more on a new
one (the server closed it while it was idle; the request was never read). A response that
is not read to its end is closed, so the server sees the request go away at once.

Exceptions::

    HTTPClientError
     ├── ConnectError        the origin cannot be reached (``os_error`` says why)
     ├── ConnectTimeout      no connection (or free pool slot) within ``connect_timeout``
     ├── ServerDisconnected  the connection closed before the response ended
     └── ProtocolError       what arrived is not an HTTP/1.1 response this client reads
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "KEEPALIVE_S",
    "MAX_HEAD_BYTES",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionPool",
    "Exchange",
    "HTTPClientError",
    "ProtocolError",
    "Response",
    "ResponseHead",
    "ResponseParser",
    "ServerDisconnected",
]


class HTTPClientError(Exception):
    """Any failure of a request before its response ended."""


class ConnectError(HTTPClientError):
    def __init__(self, message: str, os_error: OSError) -> None:
        super().__init__(message)
        self.os_error = os_error


class ConnectTimeout(HTTPClientError):
    pass


class ServerDisconnected(HTTPClientError):
    pass


class ProtocolError(HTTPClientError):
    pass


MAX_HEAD_BYTES = 64 * 1024
"""Status line and headers (and a chunked body's trailers) together."""
_MAX_CHUNK_LINE = 1024
_READ_HIGH_WATER = 256 * 1024
"""Body bytes buffered before the socket stops being read (the server then waits)."""
KEEPALIVE_S = 4.0
"""An idle connection is closed after this long: before the 5 s after which uvicorn (vLLM and
many Python servers) and Node close theirs, so that a request rarely meets a connection the
server is closing."""
_DRAIN_S = 1.0
"""How long a response released before its body's end may take to end and be reused."""
_TOKEN_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    version: str
    headers: CIMultiDictProxy[str]


# the parser's states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ResponseParser:
    """One HTTP/1.1 response, without I/O: ``feed`` bytes as they come, ``eof`` at the close.

    ``feed`` returns the body bytes that the data completed (chunk framing removed) and sets
    ``head`` once the final (non-1xx) head has arrived and ``complete`` once the body ended;
    anything malformed raises ``ProtocolError``. ``reusable`` says whether the connection can
    carry another request once ``complete``.
    """

    __slots__ = (
        "_buffer", "_left", "_state", "_trailer_bytes", "complete", "head", "reusable",
    )

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = _HEAD
        self._left = 0
        self._trailer_bytes = 0
        self.head: ResponseHead | None = None
        self.complete = False
        self.reusable = False

    def feed(self, data: bytes) -> bytes:
        state = self._state
        if state == _LENGTH and not self._buffer:  # the common case: a body read as it comes
            return self._feed_length(data)
        if state == _UNTIL_CLOSE:
            return data
        if state == _DONE:
            if data:
                self.reusable = False  # more than one response: nothing here pipelines
            return b""
        self._buffer += data
        out: list[bytes] = []
        while True:
            state = self._state
            buffer = self._buffer
            if state == _HEAD:
                if not self._parse_head():
                    break
            elif state == _LENGTH:
                if not buffer:
                    break
                rest = bytes(buffer)
                buffer.clear()
                out.append(self._feed_length(rest))
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\n")
                if end < 0:
                    if len(buffer) > _MAX_CHUNK_LINE:
                        raise ProtocolError("a chunk-size line of the response is too long")
                    break
                line = bytes(buffer[:end]).rstrip(b"\r")
                del buffer[: end + 1]
                size = line.partition(b";")[0].strip()
                if not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
                    raise ProtocolError(f"bad chunk size in the response: {line[:40]!r}")
                self._left = int(size, 16)
                self._state = _CHUNK_DATA if self._left else _TRAILERS
            elif state == _CHUNK_DATA:
                if not buffer:
                    break
                take = min(self._left, len(buffer))
                out.append(bytes(buffer[:take]))
                del buffer[:take]
                self._left -= take
                if not self._left:
                    self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buffer) < 2 and buffer[:1] != b"\n":
                    break
                if buffer[:2] == b"\r\n":
                    del buffer[:2]
                elif buffer[:1] == b"\n":
                    del buffer[:1]
                else:
                    raise ProtocolError("a chunk of the response is longer than its size")
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = buffer.find(b"\n")
                if end < 0:
                    if self._trailer_bytes + len(buffer) > MAX_HEAD_BYTES:
                        raise ProtocolError("the response's trailers are too long")
                    break
                line = bytes(buffer[:end]).rstrip(b"\r")
                del buffer[: end + 1]
                self._trailer_bytes += end + 1
                if self._trailer_bytes > MAX_HEAD_BYTES:
                    raise ProtocolError("the response's trailers are too long")
                if not line:
                    self._finish()
            elif state == _UNTIL_CLOSE:
                out.append(bytes(buffer))
                buffer.clear()
                break
            else:  # _DONE
                if buffer:
                    self.reusable = False
                    buffer.clear()
                break
        return b"".join(out) if len(out) != 1 else out[0]

    def eof(self) -> None:
        """The connection closed: the end of a close-delimited body, else a cut-short one."""
        if self._state == _UNTIL_CLOSE:
            self._finish()
        elif self._state != _DONE:
            where = "before its headers ended" if self.head is None else "before its body ended"
            raise ServerDisconnected(f"the server closed the connection {where}")

    def _finish(self) -> None:
        self._state = _DONE
        self.complete = True
        if self._buffer:
            self.reusable = False
            self._buffer.clear()

    def _feed_length(self, data: bytes) -> bytes:
        left = self._left
        if len(data) < left:
            self._left = left - len(data)
            return data
        self._left = 0
        self._finish()
        if len(data) > left:
            self.reusable = False
            return data[:left]
        return data

    def _parse_head(self) -> bool:
        buffer = self._buffer
        crlf = buffer.find(b"\r\n\r\n")
        lf = buffer.find(b"\n\n")  # bare LF line ends, which RFC 9112 lets a client accept
        if crlf < 0 and lf < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ProtocolError(f"the response's headers exceed {MAX_HEAD_BYTES} bytes")
            return False
        if lf < 0 or 0 <= crlf < lf:
            end, size = crlf, crlf + 4
        else:
            end, size = lf, lf + 2
        if size > MAX_HEAD_BYTES:
            raise ProtocolError(f"the response's headers exceed {MAX_HEAD_BYTES} bytes")
        lines = bytes(buffer[:end]).split(b"\n")
        del buffer[:size]
        status_line = lines[0].rstrip(b"\r")
        version, _, rest = status_line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.1 status line: {status_line[:60]!r}")
        status = int(code)
        headers: CIMultiDict[str] = CIMultiDict()
        for raw in lines[1:]:
            line = raw.rstrip(b"\r")
            name, colon, value = line.partition(b":")
            if not colon or not name or not _TOKEN_CHARS.issuperset(name):
                raise ProtocolError(f"a malformed header line in the response: {line[:60]!r}")
            headers.add(name.decode("ascii"), value.strip(b" \t").decode("latin-1"))
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("the server switched protocols (HTTP 101), unasked")
            return True  # an interim response (100 Continue, 103 Early Hints): the next head
        self.head = ResponseHead(
            status, reason.decode("latin-1"), version.decode(), CIMultiDictProxy(headers)
        )
        self._frame_body(version == b"HTTP/1.1", status, headers)
        return True

    def _frame_body(self, http11: bool, status: int, headers: CIMultiDict[str]) -> None:
        """RFC 9112, section 6.3: how the body's length is known."""
        tokens = ",".join(headers.getall("Connection", ())).lower().split(",")
        self.reusable = http11 and "close" not in (token.strip() for token in tokens)
        if status in (204, 304):  # no body (a HEAD request's answer neither: not sent here)
            self._finish()
            return
        if "Transfer-Encoding" in headers:
            codings = ",".join(headers.getall("Transfer-Encoding")).lower().split(",")
            if codings[-1].strip() != "chunked" or any(c.strip() != "chunked" for c in codings):
                raise ProtocolError(
                    f"the response's Transfer-Encoding {headers['Transfer-Encoding']!r} is not "
                    "supported (only chunked)"
                )
            if "Content-Length" in headers:
                self.reusable = False  # both framings: a sign of smuggling, do not reuse
            self._state = _CHUNK_SIZE
            return
        if "Content-Length" in headers:
            values = {v.strip() for v in ",".join(headers.getall("Content-Length")).split(",")}
            value = values.pop() if len(values) == 1 else ""
            if not value.isdigit() or not value.isascii():
                raise ProtocolError(
                    f"the response's Content-Length {headers['Content-Length']!r} is not a length"
                )
            self._left = int(value)
            if self._left:
                self._state = _LENGTH
            else:
                self._finish()
            return
        self.reusable = False
        self._state = _UNTIL_CLOSE


class _Connection(asyncio.Protocol):
    """One socket to the origin: a request written, its response parsed as it arrives."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received = False
        """Some byte of the current response arrived."""
        self._parser: ResponseParser | None = None
        self._head: asyncio.Future[ResponseHead] | None = None
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._draining = False
        self.idle_timer: asyncio.TimerHandle | None = None
        """Closes the connection when idle too long, or when its body does not end in time
        after the response was released (draining)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> asyncio.Future[ResponseHead]:
        """Write a request; the future is its response's head."""
        assert self.transport is not None
        self._parser = ResponseParser()
        self._body.clear()
        self._buffered = 0
        self._error = None
        self.received = False
        head = self._head = asyncio.get_running_loop().create_future()
        if self.closed or self.transport.is_closing():
            self._fail(ServerDisconnected("the server closed the connection"))
        else:
            self.transport.write(data)
        return head

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or parser.complete:  # nothing was asked: the connection is unsound
            self.close()
            return
        self.received = True
        try:
            body = parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            self.close()
            return
        head = self._head
        if parser.head is not None and head is not None and not head.done():
            head.set_result(parser.head)
        if self._draining:  # released before its end: the rest is not wanted
            if parser.complete:
                self._draining = False
                if parser.reusable:
                    self._pool._to_idle(self)
                else:
                    self.close()
            return
        if body:
            self._body.append(body)
            self._buffered += len(body)
            if self._buffered > _READ_HIGH_WATER and not self._paused:
                assert self.transport is not None
                self.transport.pause_reading()
                self._paused = True
        if body or parser.complete:
            self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser = self._parser
        if parser is not None and not parser.complete and self._error is None:
            try:
                parser.eof()
            except ServerDisconnected as disconnected:
                if exc is not None:
                    disconnected = ServerDisconnected(f"{disconnected} ({exc})")
                self._fail(disconnected)
        self._wake()
        self._pool._forget(self)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the body, for Response

    def take(self) -> bytes:
        body = self._body
        if not body:
            return b""
        data = body.popleft() if len(body) == 1 else b"".join(body)
        self.discard_body()
        return data

    def all_taken(self) -> bool:
        """The body ended and every byte of it was taken."""
        return self.body_ended() and not self._body

    def body_ended(self) -> bool:
        parser = self._parser
        return parser is not None and parser.complete

    def error(self) -> BaseException | None:
        return self._error

    async def wait(self) -> None:
        """Until body bytes are buffered, the body ended, or the connection failed."""
        if self._body or self.body_ended() or self._error is not None or self.closed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def interrupt(self, exc: BaseException) -> bool:
        """Fail the pending ``wait`` with ``exc`` (a read's time limit); False if none."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return False
        waiter.set_exception(exc)
        return True

    def reusable(self) -> bool:
        parser = self._parser
        return (
            not self.closed
            and parser is not None
            and parser.complete
            and parser.reusable
        )

    def discard_body(self) -> None:
        self._body.clear()
        self._buffered = 0
        if self._paused and not self.closed:
            assert self.transport is not None
            self.transport.resume_reading()
            self._paused = False

    def drain(self, within: float) -> None:
        """Released before the body's end: back to the pool if the end comes ``within``
        seconds (a stream's last event often comes a write before the body's end)."""
        self._draining = True
        self.discard_body()
        self.idle_timer = asyncio.get_running_loop().call_later(within, self.close)

    def can_drain(self) -> bool:
        return not self.closed and self._error is None and self._buffered <= _READ_HIGH_WATER

    def transport_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


def _body_decoder(connection: _Connection, head: ResponseHead) -> zlib._Decompress | None:
    coding = head.headers.get("Content-Encoding", "identity").strip().lower()
    if coding == "identity":
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        # 32 + MAX_WBITS reads a gzip or a zlib header; a server asked for identity (as
        # this client asks) should not compress, but some do anyway
        return zlib.decompressobj(32 + zlib.MAX_WBITS)
    connection.close()
    raise ProtocolError(f"the response's Content-Encoding {coding!r} is not supported")


class Response:
    """A response whose head has arrived; its body is read as it comes. Always ``release``
    (back to the pool once the body was read to its end) or ``close`` it."""

    __slots__ = ("_connection", "_decoder", "_done", "_pool", "head")

    def __init__(
        self,
        pool: ConnectionPool,
        connection: _Connection,
        head: ResponseHead,
        decoder: zlib._Decompress | None,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._done = False
        self._decoder = decoder
        self.head = head

    @property
    def status(self) -> int:
        return self.head.status

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self.head.headers

    @property
    def content_type(self) -> str:
        """The media type, lower case; ``application/octet-stream`` when there is none."""
        value = self.head.headers.get("Content-Type", "")
        media = value.partition(";")[0].strip().lower()
        return media or "application/octet-stream"

    @property
    def charset(self) -> str | None:
        for parameter in self.head.headers.get("Content-Type", "").split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset":
                return value.strip().strip('"') or None
        return None

    def read_nowait(self) -> bytes:
        """The body bytes that have arrived (``b""`` when none); raises if the body failed."""
        data = self._connection.take()
        if not data:
            error = self._connection.error()
            if error is not None:
                raise error
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
                if self.at_eof():
                    data += self._decoder.flush()
                    self._decoder = None
            except zlib.error as exc:
                raise ProtocolError(f"the response's compressed body is corrupt: {exc}") from None
        return data

    def at_eof(self) -> bool:
        """The whole body has been read."""
        return self._connection.all_taken()

    def interrupt(self, exc: BaseException) -> bool:
        """Make a ``readany`` that is waiting raise ``exc``; False if none is waiting. One
        timer for many reads (``upstream.UpstreamReply``) costs less than a timeout each."""
        return self._connection.interrupt(exc)

    async def readany(self) -> bytes:
        """The next body bytes as they arrive; ``b""`` at the end of the body."""
        while True:
            data = self.read_nowait()
            if data or self.at_eof():
                return data
            await self._connection.wait()

    async def read(self) -> bytes:
        """The body to its end."""
        parts: list[bytes] = []
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool when the body was read to its end; otherwise closed."""
        if self._done:
            return
        self._done = True
        connection = self._connection
        if connection.reusable():
            self._pool._to_idle(connection)
        elif connection.can_drain():
            connection.drain(_DRAIN_S)
        else:
            connection.close()
        self._pool._slot_free()

    def close(self) -> None:
        """Close the connection: the server sees the request go away."""
        if self._done:
            return
        self._done = True
        self._connection.close()
        self._pool._slot_free()


class Exchange:
    """A request written on its connection, holding a pool slot until its response is
    released or closed. Either await ``response`` or call ``close``."""

    __slots__ = ("_connection", "_data", "_done", "_head", "_pool", "_reused")

    def __init__(
        self, pool: ConnectionPool, connection: _Connection, data: bytes, *, reused: bool
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._data = data
        self._reused = reused
        self._done = False
        self._head = connection.send(data)

    async def response(self) -> Response:
        """The response, once its head has arrived."""
        if self._done:
            raise RuntimeError("the exchange is over")
        self._done = True
        connection = self._connection
        try:
            try:
                head = await self._head
            except ServerDisconnected:
                if not self._reused or connection.received:
                    raise
                # the server had closed the idle connection: the request was not read
                connection = self._connection = await self._pool._connect()
                head = await connection.send(self._data)
            return Response(self._pool, connection, head, _body_decoder(connection, head))
        except BaseException:
            connection.close()  # cancelled, timed out or failed: the server sees it go
            self._pool._slot_free()
            raise

    def close(self) -> None:
        """Give up before the response: the connection is closed and the slot freed."""
        if self._done:
            return
        self._done = True
        if self._head.done() and not self._head.cancelled():
            self._head.exception()  # retrieved, so that asyncio does not log it
        else:
            self._head.cancel()
        self._connection.close()
        self._pool._slot_free()


class ConnectionPool:
    """Requests to one origin (``base_url``'s scheme, host and port), at most ``limit`` at a
    time; a request waits for a free slot and its connection within ``connect_timeout``."""

    def __init__(
        self,
        base_url: str,
        *,
        limit: int,
        connect_timeout: float,
        keepalive_s: float = KEEPALIVE_S,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "tokenstream",
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.base_path = url.path.rstrip("/")
        default_port = self.port == (443 if url.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = host if default_port else f"{host}:{self.port}"
        self._tls = url.scheme == "https"
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(limit)
        self._connect_timeout = connect_timeout
        self._keepalive_s = keepalive_s
        self._user_agent = user_agent
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    async def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> Response:
        """Send ``method base_path+path``; return once the response's head has arrived."""
        return await (await self.send(method, path, headers, body)).response()

    async def send(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> Exchange:
        """Write the request (once a slot and a connection are free) and return at once;
        ``Exchange.response`` then waits for the answer, and the caller can work meanwhile."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        lines = [
            f"{method} {self.base_path}{path} HTTP/1.1",
            f"Host: {self._host_header}",
            f"User-Agent: {self._user_agent}",
            "Accept-Encoding: identity",
        ]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"the header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        # surrogateescape: a client's header forwarded as aiohttp decoded it, byte for byte
        request_head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        data = request_head + body if body is not None else request_head
        deadline = asyncio.get_running_loop().time() + self._connect_timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise ConnectTimeout(
                f"no free connection to {self._host_header} within {self._connect_timeout:g} s"
            ) from None
        try:
            connection, reused = self._take_idle(), True
            if connection is None:
                connection, reused = await self._connect(deadline), False
        except BaseException:
            self._slot_free()
            raise
        return Exchange(self, connection, data, reused=reused)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
                connection.idle_timer = None
            if not connection.closed and not connection.transport_closing():
                return connection
        return None

    async def _connect(self, deadline: float | None = None) -> _Connection:
        """A new connection, within ``connect_timeout`` (by ``deadline`` if given: the wait
        for a free slot counts)."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self._connect_timeout
        context: ssl.SSLContext | None = None
        if self._tls:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            context = self._ssl_context
        try:
            async with asyncio.timeout_at(deadline):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=context,
                    server_hostname=self.host if context is not None else None,
                )
        except TimeoutError:
            raise ConnectTimeout(
                f"could not connect to {self._host_header} within {self._connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise ConnectError(
                f"cannot connect to {self._host_header}: {exc.strerror or exc}", exc
            ) from None
        self._open.add(protocol)
        return protocol

    def _to_idle(self, connection: _Connection) -> None:
        connection.discard_body()
        if connection.idle_timer is not None:
            connection.idle_timer.cancel()
        if self._closed:
            connection.close()
            return
        connection.idle_timer = asyncio.get_running_loop().call_later(
            self._keepalive_s, connection.close
        )
        self._idle.append(connection)

    def _slot_free(self) -> None:
        self._slots.release()

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if connection.idle_timer is not None:
            connection.idle_timer.cancel()
            connection.idle_timer = None
        if connection in self._idle:
            self._idle.remove(connection)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def close(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        # let the transports' close callbacks run, so no socket outlives the pool
        for _ in range(3):
            if not self._open:
                break
            await asyncio.sleep(0)
