"""SSE transport: writes encoded events to an aiohttp response, with heartbeats.

A client that disconnects surfaces in aiohttp 3.x as ``ConnectionResetError`` on the next
write (or, when the server runs with ``handler_cancellation=True`` as ``tokenstream serve``
does, as a cancellation of the handler at once). Both end the stream: ``ClientGone`` is
raised from the write, and closing the pipeline's iterators stops the source.
"""

from __future__ import annotations

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


class ClientGone(Exception):
    """The client closed the connection; nothing more can be sent."""


class SSEResponse:
    def __init__(self, request: web.Request, clock: Clock) -> None:
        self.request = request
        self.clock = clock
        self.response = web.StreamResponse(headers=SSE_HEADERS)
        self.last_write = clock.now()
        self.bytes_sent = 0

    async def prepare(self) -> None:
        try:
            await self.response.prepare(self.request)
        except ConnectionResetError as exc:
            raise ClientGone from exc
        self.last_write = self.clock.now()

    async def send(self, data: bytes) -> None:
        try:
            await self.response.write(data)
        except ConnectionResetError as exc:
            raise ClientGone from exc
        self.bytes_sent += len(data)
        self.last_write = self.clock.now()

    async def close(self) -> None:
        try:
            await self.response.write_eof()
        except ConnectionResetError as exc:
            raise ClientGone from exc


class HeartbeatClock:
    """A clock for the pacer that sends a comment line through silences longer than ``interval``.

    Comment lines are ignored by EventSource and by the OpenAI SDKs' SSE parsers, and keep
    proxies from closing an idle connection during a long time to first token.
    """

    def __init__(self, clock: Clock, sse: SSEResponse, interval: float | None) -> None:
        self._clock = clock
        self._sse = sse
        self._interval = interval

    def now(self) -> float:
        return self._clock.now()

    async def sleep_until(self, deadline: float) -> None:
        if self._interval is None:
            await self._clock.sleep_until(deadline)
            return
        while True:
            next_ping = self._sse.last_write + self._interval
            if deadline <= next_ping:
                await self._clock.sleep_until(deadline)
                return
            await self._clock.sleep_until(next_ping)
            await self._sse.send(_PING)
