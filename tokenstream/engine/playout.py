"""Playout: the events of a reply that is all there, written at their deadlines from timers.

A scripted or echo reply exists whole at the start, so each event's bytes and deadline come
from a plain iterator (``reply.scheduled_reply``), and the events can be written from a
timer: no task wakes per event. On the shared ``BucketClock`` the playout is itself the
bucket entry (``scheduler.Recurring``): one pass writes every stream due in the same
millisecond, each with one ``send(2)``, calling ``on_due`` once per stream and putting it
back in the bucket of its next deadline, with no timer object made per event. On another
``TimerClock`` (tests, ``serve --clock loop``) a ``call_at`` timer calls ``on_due``.

The stream's handler task awaits ``run()`` once, and is woken only when

- the reply is all written (``run`` returns; the task sends the ending);
- a write would have to wait, because the client is not keeping up: the task sends it
  through ``SSEResponse.send`` (the send timeout and the queue cap), then playing resumes;
- the client left (``ClientGone``) or producing an event failed: ``run`` raises it.

Cancelling the task (the client left, the time limit, shutdown) takes the playout out of
its bucket (or cancels its timer) with it. Heartbeats and the time limit are the runner's
(``watch.StreamWatch``), the same for every reply.

Events due together (an unpaced reply, a late wake-up) go out in one write of up to
``batch_bytes``; the loop gets a turn between batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Protocol

from tokenstream.engine.clock import Cancellable, TimerClock
from tokenstream.engine.events import PacedEvent, ReplyEncoder
from tokenstream.engine.lateness import LatenessHistogram, StreamCounters
from tokenstream.engine.scheduler import BucketClock
from tokenstream.engine.tokenizer import Piece

__all__ = ["EventSink", "Playout"]

def _idle() -> None:
    """What the timer callbacks are when the playout is not running."""


class EventSink(Protocol):
    """Where the events go: ``tokenstream.sse.transport.SSEResponse``."""

    @property
    def batch_bytes(self) -> int:
        """Events due together are written in batches of about this many bytes."""
        ...

    def write_nowait(self, data: bytes, now: float | None = None) -> bool: ...

    async def send(self, data: bytes) -> None: ...


class Playout:
    """Plays one stream's scheduled events out to its client."""

    __slots__ = (
        "_blocked",
        "_bucket_clock",
        "_clock",
        "_events",
        "_failure",
        "_lateness",
        "_next",
        "_resume",
        "_sse",
        "_stats",
        "_timer",
        "_waiter",
        "_wake_at",
        "_wire",
        "bucket",
        "tokens",
    )

    def __init__(
        self,
        sse: EventSink,
        clock: TimerClock,
        events: Iterator[tuple[float, Piece | PacedEvent]],
        wire: ReplyEncoder,
        stats: StreamCounters,
        *,
        lateness: LatenessHistogram | None = None,
    ) -> None:
        """``lateness`` observes each event's write time minus its deadline (paced replies)."""
        self._sse = sse
        self._clock = clock
        self._bucket_clock = clock if isinstance(clock, BucketClock) else None
        self._events = events
        self._wire = wire
        self._stats = stats
        self._lateness = lateness
        self._next: tuple[float, Piece | PacedEvent] | None = None
        self._timer: Cancellable | None = None
        self._wake_at = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._blocked: bytes | None = None
        self._failure: Exception | None = None
        self.bucket: int | None = None
        """The ``BucketClock`` bucket it waits in (the clock's to set)."""
        self.tokens = 0
        """Completion tokens written so far (reasoning and tool-call arguments included)."""
        self._resume: Callable[[], None] = _idle

    async def run(self) -> None:
        """Write every event at its deadline; return when the last one is written."""
        loop = asyncio.get_running_loop()
        # bound once, handed to the clock for every timer; a bound method kept on its own
        # object is a reference cycle, so only while playing: after it, the stream's objects
        # are freed as soon as the handler lets go of them, not by the cyclic collector
        self._resume = self._on_timer
        try:
            self._waiter = loop.create_future()
            self._next = next(self._events, None)
            self._wait(self.on_due(self._clock.now()))
            while True:
                await self._waiter
                blocked = self._blocked
                if blocked is None:
                    return
                self._blocked = None
                self._waiter = loop.create_future()
                await self._sse.send(blocked)
                self._wait(self._next_wake())
        finally:
            if self._bucket_clock is not None:
                self._bucket_clock.leave(self)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._waiter = None
            self._resume = _idle

    def on_due(self, now: float) -> float | None:
        """The events the playout waits for are due at ``now``: write them. The time to be
        called at next; None when the task takes over (the reply is written, a write must
        wait, or it failed), or when more is due at once: then a timer calls again after the
        loop's next turn."""
        self._timer = None
        data = self._due_events(now)
        if data is not None and not self._write(data, now):
            return None
        wake = self._next_wake()
        if wake is not None and wake <= now:  # the next batch of events due together
            self._timer = self._clock.call_at(wake, self._resume)
            return None
        return wake

    def _on_timer(self) -> None:
        """A timer of the clock's (not a pass of the bucket clock) is due."""
        self._timer = None
        self._wait(self.on_due(self._clock.now()))

    def _wait(self, wake: float | None) -> None:
        """Be called at ``wake``: in the bucket clock's buckets, or from a timer."""
        if wake is None:
            return
        if self._bucket_clock is not None:
            self._bucket_clock.enter(self, wake)
        else:
            self._timer = self._clock.call_at(wake, self._resume)

    def _due_events(self, now: float) -> bytes | None:
        """The events due (one batch at most), as one write; None if none could be made."""
        # what the timer was set for is due even if the loop woke a hair early
        due_by = now if now > self._wake_at else self._wake_at
        writes: list[bytes] = []
        size = tokens = 0
        try:
            item = self._next
            while item is not None and item[0] <= due_by:
                deadline, piece = item
                if isinstance(piece, Piece):
                    data = self._wire.piece(piece)
                else:  # reasoning, or a tool call (``reply.scheduled_reply``)
                    data = self._wire.event(piece.event)
                if data:  # (an event the dialect has no form for writes nothing)
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
            item = None  # and nothing after it (an injected fault that ends the stream)
        self._next = item
        self.tokens += tokens
        self._stats.events_sent += len(writes)
        if not writes:
            return None
        return writes[0] if len(writes) == 1 else b"".join(writes)

    def _write(self, data: bytes, now: float) -> bool:
        """Write ``data``; False when the task takes over (the client left, or is behind)."""
        try:
            written = self._sse.write_nowait(data, now)
        except Exception as exc:  # ClientGone
            self._end(exc)
            return False
        if not written:  # the client is behind: the task waits for room, with the send timeout
            self._blocked = data
            self._end(None)
        return written

    def _next_wake(self) -> float | None:
        """When the next event is due; None (and the task woken) when nothing is left."""
        item = self._next
        if item is None:
            self._end(self._failure)
            return None
        self._wake_at = item[0]
        return item[0]

    def _end(self, error: BaseException | None) -> None:
        """Wake the task: done, blocked on a write (``_blocked``), or failed with ``error``."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
