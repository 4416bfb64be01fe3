"""A reply made ready: what the runner plays (``Reply``), and the waits of a stream's start.

The runner (``runner.Runner.stream``) admits a request, then waits for its reply to be made
ready (``made_ready``: a scheduled reply at once, an upstream's when it answers); a shutdown
meanwhile answers 503. With ``answer_within``, a reply that is not ready in time
(``ready_within``) goes on being made while the stream begins, and a refusal that comes
after that goes in the stream (``answered``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from tokenstream.engine.clock import TimerClock
from tokenstream.engine.events import ReplyEncoder, ReplyError, ReplyEvent
from tokenstream.engine.playout import EventSink
from tokenstream.engine.registry import StreamControl
from tokenstream.errors import RequestError, Unavailable, UpstreamStreamError

__all__ = ["SHUTTING_DOWN", "Reply", "answered", "made_ready", "ready_within"]

T = TypeVar("T")

SHUTTING_DOWN = "The server is shutting down; this stream was ended before its reply was complete."


class Reply(Protocol):
    """A reply ready to be played: scheduled (``reply.ScheduledReply``) or live
    (``live.LiveReply``)."""

    @property
    def tokens(self) -> int:
        """Completion tokens written so far."""
        ...

    @property
    def watch_clock(self) -> TimerClock:
        """The clock of the stream's heartbeats and time limit: the pacing clock for a reply
        that only waits on it; the event loop's for one that also waits on the network,
        whose silences and duration are real time whatever clock paces the text."""
        ...

    def play(self, sse: EventSink, encoder: ReplyEncoder) -> Awaitable[ReplyError | None]:
        """Write every event at its deadline; the source's failure, if it failed."""
        ...

    def closing_events(self) -> list[ReplyEvent]:
        """What a complete reply still ends with (its finish and usage, if not played)."""
        ...

    async def aclose(self) -> None:
        """Let go of the source (an upstream connection is closed), however the reply ended."""
        ...


async def made_ready(control: StreamControl, start: Callable[[], Awaitable[T]]) -> T:
    """The reply made ready; a shutdown meanwhile answers 503 (an upstream that takes its
    time to answer does not hold the shutdown up)."""
    try:
        with control.interruptible():
            return await start()
    except asyncio.CancelledError:
        if control.consume_stop() is None:
            raise
        raise Unavailable(SHUTTING_DOWN, code="server_shutting_down") from None


async def ready_within(answering: asyncio.Task[Reply], seconds: float) -> Reply | None:
    """The reply, if it is ready within ``seconds``; else None (it goes on being made, which
    is why this waits with ``asyncio.wait``: a timeout would cancel it)."""
    done, _ = await asyncio.wait({answering}, timeout=seconds)
    return answering.result() if done else None


async def answered(answering: asyncio.Task[Reply]) -> Reply:
    """The reply once ready, after the stream began: a refusal now goes in the stream."""
    try:
        return await answering
    except RequestError as error:
        raise UpstreamStreamError(
            error.message, error_type=error.error_type, code=error.code
        ) from None
    # (a cancellation of the stream's task reaches ``answering`` too: the request is dropped)
