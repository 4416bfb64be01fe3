"""SSE transport: writes encoded events to an aiohttp response, within a send timeout.

A client that disconnects surfaces in aiohttp 3.x as ``ConnectionResetError`` on the next
write (or, when the server runs with ``handler_cancellation=True`` as ``tokenstream serve``
does, as a cancellation of the handler at once). Both end the stream: ``ClientGone`` is
raised from the write, and the runner then lets go of the reply's source.

A client that stays connected but stops reading fills its socket buffers; then our own
output queue grows. Two bounds keep that cheap: the queue of one stream is capped at
``max_buffered`` bytes (the write waits for the client to drain it below that), and a write
that cannot finish within ``send_timeout`` seconds raises ``ClientStalled`` and the
connection is aborted, which frees the queue and the socket.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from asyncio import timeout as _timeout
from collections.abc import Mapping
from typing import Protocol

from aiohttp import web
from aiohttp.http_writer import StreamWriter

__all__ = [
    "BATCH_BYTES",
    "PING",
    "SSE_HEADERS",
    "ClientGone",
    "ClientStalled",
    "SSEResponse",
    "head_response",
]

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tells nginx not to buffer the stream
}

PING = b": ping\n"
"""A heartbeat: a comment line that keeps proxies and clients' read timeouts from closing a
silent connection. It has no blank line after it: a blank line dispatches an event, and a
parser that keeps the last event's ``id:`` (WHATWG does) would then dispatch one with empty
data, which the OpenAI and Anthropic SDKs (Stainless) hand to ``json.loads``. The comment
is read as part of the next event, which ignores it."""


BATCH_BYTES = 16 * 1024
"""Events due at the same time are written together up to about this many bytes per write."""


def head_response(headers: Mapping[str, str] | None = None) -> web.Response:
    """The answer to ``HEAD`` on a stream endpoint, once the query is valid: the headers a
    ``GET`` gets (``headers``: a dialect's own), no body (HTTP forbids one), no stream
    started and nothing sent upstream."""
    return web.Response(headers={**SSE_HEADERS, **(headers or {})})


def reset_connection(request: web.Request) -> None:
    """Reset ``request``'s connection (TCP RST, as a crashed peer or a middlebox does): a
    zero linger time makes closing the socket send RST instead of FIN."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Now(Protocol):
    """The clock writes are stamped with (``last_write``): the engine's pacing clock."""

    def now(self) -> float: ...


class ClientGone(Exception):
    """The client closed the connection; nothing more can be sent."""


class ClientStalled(ClientGone):
    """A write did not complete within the send timeout: the client stopped reading."""


class SSEResponse:
    __slots__ = ("_chunked", "_direct", "batch_bytes", "bytes_sent", "clock", "last_write",
                 "max_buffered", "peak_buffered", "request", "response", "send_timeout")

    def __init__(
        self,
        request: web.Request,
        clock: Now,
        *,
        send_timeout: float | None = None,
        max_buffered: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``headers``: the dialect's own, added to ``SSE_HEADERS``."""
        self.request = request
        self.clock = clock
        self.response = web.StreamResponse(
            headers=SSE_HEADERS if headers is None else {**SSE_HEADERS, **headers}
        )
        self.last_write = clock.now()
        self.bytes_sent = 0
        self.send_timeout = send_timeout
        self.max_buffered = max_buffered
        self.batch_bytes = (
            BATCH_BYTES if max_buffered is None else max(1, min(BATCH_BYTES, max_buffered // 8))
        )
        """How much to write at once of events due together: small beside the queue cap, so
        a client that stops reading never has much more than the cap queued."""
        self.peak_buffered = 0
        """The largest output queue seen after a write, in bytes (for the access log)."""
        # the connection's transport once prepared, when write_nowait may write to it itself
        self._direct: asyncio.Transport | None = None
        self._chunked = False

    async def prepare(self) -> None:
        """Start the response: its status line and headers go to the socket now, in a write
        of their own.

        Preparing never waits for the client (the headers go into an empty socket buffer),
        so it needs no send timeout.
        """
        try:
            await self.response.prepare(self.request)
        except ConnectionResetError as exc:
            raise ClientGone from exc
        transport = self.request.transport
        if self.max_buffered is not None and transport is not None:
            # the protocol pauses (and our drain waits) once this much output is queued
            transport.set_write_buffer_limits(high=self.max_buffered)
        writer = self.request.writer
        if isinstance(writer, StreamWriter) and transport is not None:
            # ``write_nowait`` writes to the socket itself, the body framed as aiohttp frames it
            self._direct = transport
            self._chunked = writer.chunked
        self.last_write = self.clock.now()

    def write_nowait(self, data: bytes, now: float | None = None) -> bool:
        """Write ``data`` now if that cannot wait; False (nothing written) if it could.

        Nothing queued means the socket took everything so far and the protocol is not
        paused, so a write no bigger than the queue cap cannot wait: it needs neither a
        timeout (a timer per event) nor a drain. This is the hot path of every stream, and
        what ``tokenstream.engine.playout`` writes with from a timer callback. ``now``: the clock's
        time, when the caller has just read it.
        """
        transport = self._direct
        if transport is None:
            return False
        if transport.is_closing():
            raise ClientGone
        size = len(data)
        if not self._cannot_wait(transport, size):
            return False
        if not size:
            return True  # an empty chunk would end a chunked body
        transport.write(b"%x\r\n%b\r\n" % (size, data) if self._chunked else data)
        self.bytes_sent += size
        self.last_write = self.clock.now() if now is None else now
        return True

    async def send(self, data: bytes) -> None:
        """Write ``data``; wait (up to the send timeout) while the queue is over its cap."""
        if self.write_nowait(data):
            return
        try:
            async with _timeout(self.send_timeout):
                await self.response.write(data)
                self._note_buffered()
                # aiohttp drains only every 64 KiB written; drain now so the queue stays capped
                await self.request.writer.drain()
        except ConnectionResetError as exc:
            raise ClientGone from exc
        except TimeoutError as exc:
            raise ClientStalled from exc
        self.bytes_sent += len(data)
        self.last_write = self.clock.now()

    async def close(self, ending: bytes = b"") -> None:
        """Write ``ending`` (the last events) and end the body, in one write.

        With nothing queued, the write cannot wait (as in ``write_nowait``) and needs no
        timeout; otherwise it waits for the client up to the send timeout.
        """
        transport = self._direct
        try:
            if transport is not None and self._cannot_wait(transport, len(ending)):
                await self.response.write_eof(ending)
            else:
                async with _timeout(self.send_timeout):
                    await self.response.write_eof(ending)
        except ConnectionResetError as exc:
            raise ClientGone from exc
        except TimeoutError as exc:
            raise ClientStalled from exc
        if ending:
            self.bytes_sent += len(ending)
            self.last_write = self.clock.now()

    def _cannot_wait(self, transport: asyncio.Transport, size: int) -> bool:
        """Whether a write of ``size`` bytes goes to the socket at once: nothing is queued
        (so the protocol is not paused) and it is no bigger than the queue cap."""
        return not transport.get_write_buffer_size() and (
            self.max_buffered is None or size <= self.max_buffered
        )

    def reset(self) -> None:
        """Reset the connection (TCP RST), dropping whatever is queued for it."""
        reset_connection(self.request)

    def abort(self) -> None:
        """Drop the connection and everything queued for it (after a stall)."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def release(self) -> None:
        """At the stream's end: forget the traceback of a connection error aiohttp keeps for
        the request (``request.content.exception()``). A write that met the client's reset
        raised it inside this object's frames, so it holds them, and through them this
        object: a reference cycle that would leave every such stream to the cyclic GC."""
        error = self.request.content.exception()
        if error is not None:
            error.__traceback__ = None

    def _note_buffered(self) -> None:
        transport = self.request.transport
        if transport is not None:
            queued = transport.get_write_buffer_size()
            if queued > self.peak_buffered:
                self.peak_buffered = queued
