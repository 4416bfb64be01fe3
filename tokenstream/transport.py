"""SSE transport: writes encoded events to an aiohttp response, with heartbeats.

A client that disconnects surfaces in aiohttp 3.x as ``ConnectionResetError`` on the next
write (or, when the server runs with ``handler_cancellation=True`` as ``tokenstream serve``
does, as a cancellation of the handler at once). Both end the stream: ``ClientGone`` is
raised from the write, and closing the pipeline's iterators stops the source.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from tokenstream.clock import Clock
from tokenstream.sse import encode_comment

__all__ = ["SSE_HEADERS", "ClientGone", "HeartbeatClock", "SSEResponse"]

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


class SSEResponse:
    __slots__ = ("_held", "_held_bytes", "bytes_sent", "clock", "last_write", "request",
                 "response")

    def __init__(self, request: web.Request, clock: Clock) -> None:
        self.request = request
        self.clock = clock
        self.response = web.StreamResponse(headers=SSE_HEADERS)
        self.last_write = clock.now()
        self.bytes_sent = 0
        self._held: list[bytes] = []
        self._held_bytes = 0

    @property
    def holding(self) -> bool:
        return bool(self._held)

    async def prepare(self) -> None:
        try:
            await self.response.prepare(self.request)
        except ConnectionResetError as exc:
            raise ClientGone from exc
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
            if hold and self._held_bytes < HOLD_LIMIT:
                return
            data = b"".join(self._held)
            self._held.clear()
            self._held_bytes = 0
        try:
            await self.response.write(data)
        except ConnectionResetError as exc:
            raise ClientGone from exc
        self.bytes_sent += len(data)
        self.last_write = self.clock.now()

    async def flush(self) -> None:
        if self._held:
            await self.send(b"")

    async def close(self) -> None:
        await self.flush()
        try:
            await self.response.write_eof()
        except ConnectionResetError as exc:
            raise ClientGone from exc


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
