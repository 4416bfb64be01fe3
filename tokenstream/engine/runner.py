"""The one runner: every reply, scripted or live, streamed or whole, from admission to end.

    admit      StreamRegistry.open(): 429 beyond the concurrency limit, 503 at shutdown,
               before anything is tokenized or asked of an upstream
    start      the dialect's ``start``: the reply made ready (scheduled, or the upstream
               answered); a shutdown meanwhile answers 503
    prepare    status line and headers; the watch (heartbeats and the time limit) starts
    play       the reply's events written at their deadlines (``Reply.play``)
    end        a complete reply: its closing events (finish, usage) and the dialect's ending;
               a source that failed, the time limit or shutdown: the dialect's error event
               and ending; a client that left or stalled: nothing more
    account    ``endings.Accounting``: ``StreamStats``, the access record, one log line for
               anything unusual

A whole (``stream: false``) reply goes through the same admission, start, time limit and
shutdown (``Runner.whole``); its events are collected instead of written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from aiohttp import web

from tokenstream.engine.accounting import AccessRecord, StreamStats, current_record
from tokenstream.engine.clock import Cancellable, LoopClock, TimerClock
from tokenstream.engine.endings import Accounting
from tokenstream.engine.events import ReplyEncoder, ReplyError, ReplyEvent
from tokenstream.engine.registry import StopReason, StreamControl, StreamRegistry
from tokenstream.errors import InvalidRequest, RequestError, Unavailable, UpstreamStreamError
from tokenstream.sse.transport import PING, ClientGone, SSEResponse

__all__ = [
    "SHUTTING_DOWN",
    "STREAM_TIME_LIMIT",
    "Reply",
    "Runner",
    "StreamLimits",
    "StreamWatch",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

STREAM_TIME_LIMIT = (
    "The reply reached this server's maximum duration of {limit:g} s "
    "(server.max_stream_duration_s) and was ended. Ask for a faster pace or a shorter reply."
)
SHUTTING_DOWN = "The server is shutting down; this stream was ended before its reply was complete."


@dataclass(frozen=True, slots=True)
class StreamLimits:
    heartbeat_s: float | None = None
    """A comment line after this much silence; None: no heartbeats."""
    max_stream_duration_s: float | None = None
    send_timeout_s: float | None = None
    max_buffered_bytes: int | None = None


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

    def play(self, sse: SSEResponse, encoder: ReplyEncoder) -> Awaitable[ReplyError | None]:
        """Write every event at its deadline; the source's failure, if it failed."""
        ...

    def closing_events(self) -> list[ReplyEvent]:
        """What a complete reply still ends with (its finish and usage, if not played)."""
        ...

    async def aclose(self) -> None:
        """Let go of the source (an upstream connection is closed), however the reply ended."""
        ...


class _Heartbeat(Protocol):
    @property
    def last_write(self) -> float: ...

    def write_nowait(self, data: bytes, now: float | None = None) -> bool: ...


class StreamWatch:
    """Heartbeats and the time limit of one reply, on one timer of its ``Reply.watch_clock``.

    After ``heartbeat`` seconds without a write, a ping comment goes out (only if it can be
    written at once: output still queued means the connection is not silent). At ``limit``
    (absolute) the stream's control is stopped with the reason ``time_limit``, which cancels
    whatever the stream waits for: a pacing deadline, an upstream that sends nothing, or
    one that sends only what is not text.
    """

    __slots__ = ("_clock", "_control", "_heartbeat", "_limit", "_sink", "_timer")

    def __init__(
        self,
        clock: TimerClock,
        control: StreamControl,
        *,
        sink: _Heartbeat | None = None,
        heartbeat: float | None = None,
        limit: float | None = None,
    ) -> None:
        self._clock = clock
        self._control = control
        self._sink = sink
        self._heartbeat = heartbeat if sink is not None else None
        self._limit = limit
        self._timer: Cancellable | None = None
        self._arm()

    def _arm(self) -> None:
        due = self._limit
        if self._sink is not None and self._heartbeat is not None:
            ping_at = self._sink.last_write + self._heartbeat
            if due is None or ping_at < due:
                due = ping_at
        if due is not None:
            self._timer = self._clock.call_at(due, self._on_due)

    def _on_due(self) -> None:
        self._timer = None
        now = self._clock.now()
        if self._limit is not None and now >= self._limit:
            self._control.stop("time_limit")
            return
        sink, heartbeat = self._sink, self._heartbeat
        if sink is not None and heartbeat is not None and now >= sink.last_write + heartbeat:
            try:
                sink.write_nowait(PING, now)
            except ClientGone:
                return  # the stream's own write or wait ends it
        self._arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Runner:
    """Runs every reply of one app: its streams' lifecycle, in one place."""

    def __init__(
        self,
        clock: TimerClock,
        registry: StreamRegistry,
        stats: StreamStats,
        limits: StreamLimits,
        client_of: Callable[[web.Request], str | None] = lambda request: None,
    ) -> None:
        """``client_of`` names who sent a request, for the registry's per-client limit."""
        self.clock = clock
        self.registry = registry
        self.stats = stats
        self.limits = limits
        self.client_of = client_of

    def _deadline(self, clock: TimerClock) -> float | None:
        limit = self.limits.max_stream_duration_s
        return None if limit is None else clock.now() + limit

    async def stream(
        self,
        request: web.Request,
        encoder: ReplyEncoder,
        start: Callable[[], Awaitable[Reply]],
        *,
        answer_within: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """Admit, start, and stream a reply to ``request`` in ``encoder``'s wire format.

        ``answer_within``: when the reply is not ready by then (an upstream that takes its
        time to answer), the stream begins anyway, with its headers and then heartbeats, so
        that no proxy in between gives up on a silent connection; a failure from there on is
        the dialect's error event instead of an HTTP status. ``headers``: the dialect's own
        response headers, besides the SSE ones.
        """
        control = self.registry.open(self.client_of(request))
        answering: asyncio.Task[Reply] | None = None
        reply: Reply | None
        try:
            if answer_within is None:
                reply = await _started(control, start)
            else:
                answering = asyncio.ensure_future(start())
                reply = await _started(control, partial(_within, answering, answer_within))
        except BaseException:
            if answering is not None:
                answering.cancel()
            self.registry.close(control)
            raise
        limits = self.limits
        record = current_record()
        record.stream = True
        sse = SSEResponse(
            request,
            self.clock,
            send_timeout=limits.send_timeout_s,
            max_buffered=limits.max_buffered_bytes,
            headers=headers,
        )
        watch: StreamWatch | None = None
        try:
            async with Accounting(
                self.stats, sse, encoder, record, request.path, limits.send_timeout_s
            ):
                await sse.prepare()
                record.status = sse.response.status
                clock = LoopClock() if reply is None else reply.watch_clock
                watch = StreamWatch(
                    clock, control, sink=sse, heartbeat=limits.heartbeat_s,
                    limit=self._deadline(clock),
                )
                try:
                    with control.interruptible():
                        if reply is None:
                            assert answering is not None
                            reply = await _answered(answering)
                        failure = await reply.play(sse, encoder)
                    if failure is not None:
                        raise UpstreamStreamError(
                            failure.message, error_type=failure.error_type, code=failure.code
                        )
                    ending = b"".join(encoder.event(e) for e in reply.closing_events())
                    ending += encoder.end()
                    record.outcome = "completed"
                except asyncio.CancelledError:
                    reason = control.consume_stop()
                    if reason is None:
                        raise  # the client left
                    ending = self._cut_short(reason, encoder, record)
                finally:
                    record.tokens = 0 if reply is None else reply.tokens
                await sse.close(ending)
        finally:
            if watch is not None:
                watch.cancel()
            self.registry.close(control)
            sse.release()
            if reply is not None:
                await reply.aclose()
            elif answering is not None:
                answering.cancel()
        return sse.response

    def _cut_short(self, reason: StopReason, encoder: ReplyEncoder, record: AccessRecord) -> bytes:
        """The ending of a stream stopped by its time limit or by shutdown."""
        error = self._stop_error(reason)
        record.outcome = reason
        return encoder.error(error.message, error.error_type, error.code)

    def _stop_error(self, reason: StopReason) -> RequestError:
        if reason == "time_limit":
            return InvalidRequest(
                STREAM_TIME_LIMIT.format(limit=self.limits.max_stream_duration_s or 0.0),
                code="stream_duration_exceeded",
            )
        return Unavailable(SHUTTING_DOWN, code="server_shutting_down")

    async def whole(
        self,
        request: web.Request,
        work: Callable[[], Awaitable[T]],
        *,
        clock: TimerClock | None = None,
    ) -> T:
        """A reply answered whole: admitted, limited in time and stopped at shutdown as a
        stream is; a stop answers the error (400 time limit, 503 shutdown). ``clock``: the
        time limit's, when ``work`` waits on another than the pacing clock."""
        control = self.registry.open(self.client_of(request))
        clock = clock or self.clock
        watch = StreamWatch(clock, control, limit=self._deadline(clock))
        try:
            with control.interruptible():
                return await work()
        except asyncio.CancelledError:
            reason = control.consume_stop()
            if reason is None:
                raise
            raise self._stop_error(reason) from None
        finally:
            watch.cancel()
            self.registry.close(control)


async def _started(control: StreamControl, start: Callable[[], Awaitable[T]]) -> T:
    """The reply made ready; a shutdown meanwhile answers 503 (an upstream that takes its
    time to answer does not hold the shutdown up)."""
    try:
        with control.interruptible():
            return await start()
    except asyncio.CancelledError:
        if control.consume_stop() is None:
            raise
        raise Unavailable(SHUTTING_DOWN, code="server_shutting_down") from None


async def _within(answering: asyncio.Task[Reply], seconds: float) -> Reply | None:
    """The reply, if it is ready within ``seconds``; else None (it goes on being made, which
    is why this waits with ``asyncio.wait``: a timeout would cancel it)."""
    done, _ = await asyncio.wait({answering}, timeout=seconds)
    return answering.result() if done else None


async def _answered(answering: asyncio.Task[Reply]) -> Reply:
    """The reply once ready, after the stream began: a refusal now goes in the stream."""
    try:
        return await answering
    except RequestError as error:
        raise UpstreamStreamError(
            error.message, error_type=error.error_type, code=error.code
        ) from None
    # (a cancellation of the stream's task reaches ``answering`` too: the request is dropped)
