"""Playout: the events of a reply that is all there, written at their deadlines from timers.

A scripted or echo reply exists whole at the start, so each event's bytes and deadline come
from a plain iterator (``pipeline.scheduled_reply``), and the events can be written from a
``TimerClock`` callback: no task wakes per event. With the shared ``BucketClock`` one timer
callback writes every stream due in the same millisecond, each with one ``send(2)``; a stream
costs the loop a callback per event instead of a timer, a future and a task step.

The stream's handler task awaits ``run()`` once, and is woken only when

- the reply is all written (``run`` returns; the task sends the ending);
- a write would have to wait, because the client is not keeping up: the task sends it
  through ``SSEResponse.send`` (the send timeout and the queue cap), then playing resumes;
- the stream reaches its time limit (``StreamTimeLimit``), the client left (``ClientGone``)
  or producing an event failed: ``run`` raises it.

Cancelling the task (the client left, shutdown) cancels the pending timer with it.

Events due together (an unpaced reply, a late wake-up) go out in one write of up to
``batch_bytes``; the loop gets a turn between batches. A silence longer than ``heartbeat``
seconds (a long time to first token, a slow pace) gets a ping comment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Protocol

from tokenstream.clock import Cancellable, TimerClock
from tokenstream.metrics import LatenessHistogram, StreamCounters
from tokenstream.streams import StreamTimeLimit
from tokenstream.tokenizer import Piece
from tokenstream.transport import PING
from tokenstream.wire import WireFormat

__all__ = ["EventSink", "Playout"]

_EVENT, _PING, _LIMIT = 0, 1, 2  # what a timer was set for


def _idle() -> None:
    """What the timer callbacks are when the playout is not running."""


class EventSink(Protocol):
    """Where the events go: ``tokenstream.transport.SSEResponse``."""

    @property
    def last_write(self) -> float: ...

    @property
    def batch_bytes(self) -> int:
        """Events due together are written in batches of about this many bytes."""
        ...

    def write_nowait(self, data: bytes, now: float | None = None) -> bool: ...

    def flush_headers(self) -> None:
        """Send the response headers now if they wait for the first event."""
        ...

    async def send(self, data: bytes) -> None: ...


class Playout:
    """Plays one stream's scheduled events out to its client."""

    __slots__ = (
        "_blocked",
        "_clock",
        "_events",
        "_failure",
        "_heartbeat",
        "_lateness",
        "_limit",
        "_next",
        "_sse",
        "_stats",
        "_timer",
        "_waiter",
        "_wake",
        "_wake_at",
        "_wake_for",
        "_wake_to_play",
        "_wire",
        "tokens",
    )

    def __init__(
        self,
        sse: EventSink,
        clock: TimerClock,
        events: Iterator[tuple[float, Piece]],
        wire: WireFormat,
        stats: StreamCounters,
        *,
        heartbeat: float | None = None,
        limit: float | None = None,
        lateness: LatenessHistogram | None = None,
    ) -> None:
        """``limit`` is the stream's end of time (absolute); ``lateness`` observes each
        event's write time minus its deadline (for paced replies)."""
        self._sse = sse
        self._clock = clock
        self._events = events
        self._wire = wire
        self._stats = stats
        self._heartbeat = heartbeat or None
        self._limit = limit
        self._lateness = lateness
        self._next: tuple[float, Piece] | None = None
        self._timer: Cancellable | None = None
        self._wake_at = 0.0
        self._wake_for = _EVENT
        self._waiter: asyncio.Future[None] | None = None
        self._blocked: bytes | None = None
        self._failure: Exception | None = None
        self.tokens = 0
        """Completion tokens written so far."""
        self._wake: Callable[[], None] = _idle
        self._wake_to_play: Callable[[], None] = _idle

    async def run(self) -> None:
        """Write every event at its deadline; return when the last one is written."""
        loop = asyncio.get_running_loop()
        # bound once, handed to the clock for every event; a bound method kept on its own
        # object is a reference cycle, so only while playing: after it, the stream's objects
        # are freed as soon as the handler lets go of them, not by the cyclic collector
        self._wake = self._on_timer
        self._wake_to_play = self._play
        try:
            self._waiter = loop.create_future()
            self._next = next(self._events, None)
            self._play()
            self._sse.flush_headers()  # when the first event is not due yet
            while True:
                await self._waiter
                blocked = self._blocked
                if blocked is None:
                    return
                self._blocked = None
                self._waiter = loop.create_future()
                await self._sse.send(blocked)
                self._arm()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._waiter = None
            self._wake = self._wake_to_play = _idle

    def _on_timer(self) -> None:
        """A ping or the time limit is due (an event's timer calls ``_play`` itself)."""
        self._timer = None
        if self._wake_for == _PING:
            self._write_then_arm(PING)
        else:
            self._end(StreamTimeLimit())

    def _play(self) -> None:
        """Write what is due (one batch at most), then set the timer for what comes next."""
        self._timer = None
        now = self._clock.now()
        # the timer was set for this event: it is due even if the loop woke a hair early
        due_by = max(now, self._wake_at)
        writes: list[bytes] = []
        size = tokens = 0
        try:
            item = self._next
            while item is not None and item[0] <= due_by:
                deadline, piece = item
                data = self._wire.piece(piece)
                writes.append(data)
                size += len(data)
                tokens += piece.tokens
                if self._lateness is not None:
                    self._lateness.observe(now - deadline)
                item = None  # (if producing the next one fails, nothing is left)
                item = next(self._events, None)
                if size >= self._sse.batch_bytes:
                    break
        except Exception as exc:  # what was produced goes out; then the task reports it
            self._failure = exc
        self._next = item
        self.tokens += tokens
        self._stats.events_sent += len(writes)
        if writes:
            self._write_then_arm(writes[0] if len(writes) == 1 else b"".join(writes), now)
        else:
            self._arm()

    def _write_then_arm(self, data: bytes, now: float | None = None) -> None:
        try:
            written = self._sse.write_nowait(data, now)
        except Exception as exc:  # ClientGone
            self._end(exc)
            return
        if written:
            self._arm()
        else:  # the client is behind: the task waits for room, with the send timeout
            self._blocked = data
            self._end(None)

    def _arm(self) -> None:
        """Set the timer for the next event, ping or time limit; end when nothing is left."""
        item = self._next
        if item is None:
            self._end(self._failure)
            return
        wake_at, wake_for = item[0], _EVENT
        if self._limit is not None and wake_at > self._limit:
            wake_at, wake_for = self._limit, _LIMIT
        if self._heartbeat is not None:
            ping_at = self._sse.last_write + self._heartbeat
            if wake_at > ping_at:
                wake_at, wake_for = ping_at, _PING
        self._wake_at = wake_at
        self._wake_for = wake_for
        self._timer = self._clock.call_at(
            wake_at, self._wake_to_play if wake_for == _EVENT else self._wake
        )

    def _end(self, error: BaseException | None) -> None:
        """Wake the task: done, blocked on a write (``_blocked``), or failed with ``error``."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
