"""SSE transport: writes encoded events to an aiohttp response, with heartbeats.

A client that disconnects surfaces in aiohttp 3.x as ``ConnectionResetError`` on the next
write (or, when the server runs with ``handler_cancellation=True`` as ``tokenstream serve``
does, as a cancellation of the handler at once). Both end the stream: ``ClientGone`` is
raised from the write, and closing the pipeline's iterators stops the source.

A client that stays connected but stops reading fills its socket buffers; then our own
output queue grows. Two bounds keep that cheap: the queue of one stream is capped at
``max_buffered`` bytes (the write waits for the client to drain it below that), and a write
that cannot finish within ``send_timeout`` seconds raises ``ClientStalled`` and the
connection is aborted, which frees the queue and the socket.
"""

from __future__ import annotations

from asyncio import timeout as _timeout
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from tokenstream.clock import Clock
from tokenstream.sse import encode_comment

__all__ = ["SSE_HEADERS", "ClientGone", "ClientStalled", "HeartbeatClock", "SSEResponse"]

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tells nginx not to buffer the stream
}

_PING = encode_comment("ping")
HOLD_LIMIT = 16 * 1024
"""Held events are written together once they reach this many bytes."""


class ClientGone(Exception):
    """The client closed the connection; nothing more can be sent."""


class ClientStalled(ClientGone):
    """A write did not complete within the send timeout: the client stopped reading."""


class SSEResponse:
    __slots__ = ("_held", "_held_bytes", "_hold_limit", "bytes_sent", "clock", "last_write",
                 "max_buffered", "peak_buffered", "request", "response", "send_timeout")

    def __init__(
        self,
        request: web.Request,
        clock: Clock,
        *,
        send_timeout: float | None = None,
        max_buffered: int | None = None,
    ) -> None:
        self.request = request
        self.clock = clock
        self.response = web.StreamResponse(headers=SSE_HEADERS)
        self.last_write = clock.now()
        self.bytes_sent = 0
        self._held: list[bytes] = []
        self._held_bytes = 0
        self.send_timeout = send_timeout
        self.max_buffered = max_buffered
        # a batch of held events is one write; keep it small beside the queue cap, so a
        # client that stops reading never has much more than the cap queued
        self._hold_limit = (
            HOLD_LIMIT if max_buffered is None else max(1, min(HOLD_LIMIT, max_buffered // 8))
        )
        self.peak_buffered = 0
        """The largest output queue seen after a write, in bytes (for the access log)."""

    @property
    def holding(self) -> bool:
        return bool(self._held)

    async def prepare(self) -> None:
        try:
            async with _timeout(self.send_timeout):
                await self.response.prepare(self.request)
        except ConnectionResetError as exc:
            raise ClientGone from exc
        except TimeoutError as exc:
            raise ClientStalled from exc
        transport = self.request.transport
        if self.max_buffered is not None and transport is not None:
            # the protocol pauses (and our drain waits) once this much output is queued
            transport.set_write_buffer_limits(high=self.max_buffered)
        self.last_write = self.clock.now()

    async def send(self, data: bytes, *, hold: bool = False) -> None:
        """Write ``data``, after any held data.

        ``hold`` keeps it back to go out with later events in one write (one system call
        for many events): for unpaced replies whose text is all there, where nothing is
        gained by writing each event alone. ``HeartbeatClock`` writes held events before
        the pacer waits, so holding never delays an event past a pause.
        """
        if hold or self._held:
            self._held.append(data)
            self._held_bytes += len(data)
            if hold and self._held_bytes < self._hold_limit:
                return
            data = b"".join(self._held)
            self._held.clear()
            self._held_bytes = 0
        transport = self.request.transport
        try:
            if (
                transport is not None
                and transport.get_write_buffer_size() == 0
                and len(data) < self._hold_limit
            ):
                # The hot path: nothing is queued, so the socket took everything so far and
                # the protocol is not paused; a write smaller than the queue cap cannot
                # wait, and needs neither a timeout (a timer per event) nor a drain.
                await self.response.write(data)
            else:
                async with _timeout(self.send_timeout):
                    await self.response.write(data)
                    self._note_buffered()
                    # aiohttp drains only every 64 KiB written; drain now so the queue
                    # stays capped
                    await self.request.writer.drain()
        except ConnectionResetError as exc:
            raise ClientGone from exc
        except TimeoutError as exc:
            raise ClientStalled from exc
        self.bytes_sent += len(data)
        self.last_write = self.clock.now()

    async def flush(self) -> None:
        if self._held:
            await self.send(b"")

    async def close(self) -> None:
        await self.flush()
        try:
            async with _timeout(self.send_timeout):
                await self.response.write_eof()
        except ConnectionResetError as exc:
            raise ClientGone from exc
        except TimeoutError as exc:
            raise ClientStalled from exc

    def abort(self) -> None:
        """Drop the connection and everything queued for it (after a stall)."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def _note_buffered(self) -> None:
        transport = self.request.transport
        if transport is not None:
            queued = transport.get_write_buffer_size()
            if queued > self.peak_buffered:
                self.peak_buffered = queued


class HeartbeatClock:
    """A clock for the pacer that sends a comment line through silences longer than ``interval``.

    Comment lines are ignored by EventSource and by the OpenAI SDKs' SSE parsers, and keep
    proxies from closing an idle connection during a long time to first token.
    """

    __slots__ = ("_clock", "_interval", "_sse")

    def __init__(self, clock: Clock, sse: SSEResponse, interval: float | None) -> None:
        self._clock = clock
        self._sse = sse
        self._interval = interval

    def now(self) -> float:
        return self._clock.now()

    def sleep_until(self, deadline: float) -> Coroutine[Any, Any, None]:
        # The common case, no ping due before the deadline, hands out the inner clock's
        # sleep rather than wrapping it in one more coroutine (this runs for every event).
        if self._sse.holding and deadline > self._clock.now():
            return self._flush_then_sleep(deadline)
        if self._interval is None or deadline <= self._sse.last_write + self._interval:
            return self._clock.sleep_until(deadline)
        return self._sleep_with_pings(deadline, self._interval)

    async def _flush_then_sleep(self, deadline: float) -> None:
        await self._sse.flush()
        await self.sleep_until(deadline)

    async def _sleep_with_pings(self, deadline: float, interval: float) -> None:
        while True:
            next_ping = self._sse.last_write + interval
            if deadline <= next_ping:
                await self._clock.sleep_until(deadline)
                return
            await self._clock.sleep_until(next_ping)
            await self._sse.send(_PING)
