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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from aiohttp import web

from tokenstream.engine.accounting import AccessRecord, StreamStats, current_record
from tokenstream.engine.clock import LoopClock, TimerClock
from tokenstream.engine.endings import Accounting
from tokenstream.engine.events import ReplyEncoder
from tokenstream.engine.faults import Fault
from tokenstream.engine.injection import (
    FaultReached,
    FaultyEncoder,
    InjectedFaults,
    StallGate,
    answer_fault,
    fault_ending,
    fault_error,
    in_stream_faults,
)
from tokenstream.engine.playout import EventSink
from tokenstream.engine.registry import StopReason, StreamControl, StreamRegistry
from tokenstream.engine.resume import ResumableFeed
from tokenstream.engine.starting import (
    SHUTTING_DOWN,
    Reply,
    answered,
    made_ready,
    ready_within,
)
from tokenstream.engine.streamlog import STREAM_ID_HEADER, StreamLog, StreamLogStore
from tokenstream.engine.watch import HeartbeatSink, StreamWatch
from tokenstream.errors import (
    InvalidRequest,
    RequestError,
    Unavailable,
    UpstreamStreamError,
)
from tokenstream.sse.transport import ClientGone, SSEResponse, reset_connection

__all__ = [
    "STREAM_TIME_LIMIT",
    "ResumeSettings",
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


@dataclass(frozen=True, slots=True)
class ResumeSettings:
    linger_s: float = 30.0
    """How long a resumable reply goes on being made after its client left."""


_CUTS = frozenset({"reset", "truncate"})
"""Faults that cut the connection: of a resumable reply, only the connection."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    heartbeat_s: float | None = None
    """A comment line after this much silence; None: no heartbeats."""
    max_stream_duration_s: float | None = None
    send_timeout_s: float | None = None
    max_buffered_bytes: int | None = None


class Runner:
    """Runs every reply of one app: its streams' lifecycle, in one place."""

    def __init__(
        self,
        clock: TimerClock,
        registry: StreamRegistry,
        stats: StreamStats,
        limits: StreamLimits,
        client_of: Callable[[web.Request], str | None] = lambda request: None,
        *,
        logs: StreamLogStore | None = None,
        resume: ResumeSettings | None = None,
    ) -> None:
        """``client_of`` names who sent a request, for the registry's per-client limit.
        ``logs``: where each stream's id and a resumable stream's events are kept (None: no
        stream ids)."""
        self.clock = clock
        self.registry = registry
        self.stats = stats
        self.limits = limits
        self.client_of = client_of
        self.logs = logs
        self.resume_settings = resume or ResumeSettings()

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
        faults: Sequence[Fault] = (),
        resumable: bool = False,
        chat_id: str | None = None,
    ) -> web.StreamResponse:
        """Admit, start, and stream a reply to ``request`` in ``encoder``'s wire format.

        ``answer_within``: when the reply is not ready by then (an upstream that takes its
        time to answer), the stream begins anyway, with its headers and then heartbeats, so
        that no proxy in between gives up on a silent connection; a failure from there on is
        the dialect's error event instead of an HTTP status. ``headers``: the dialect's own
        response headers, besides the SSE ones. ``faults``: injected (``engine.injection``):
        an error at the start answers before anything is admitted or asked of a source.
        ``resumable``: its events are kept (``streamlog``) and it goes on for a while after
        the client left, for a reconnect to resume (``resume``); ``chat_id``: the AI SDK
        chat it answers. Every event has ``id: <stream id>:<sequence>`` (the encoder numbers
        them with its log's ``ids``).
        """
        if faults:
            current_record().fault = ",".join(str(fault) for fault in faults)
        at_start = answer_fault(faults)
        if at_start is not None:
            raise fault_error(at_start)
        started = self.clock.now()
        slow_headers = sum(f.duration or 0.0 for f in faults if f.kind == "slow_headers")
        if slow_headers:
            answer_within = None  # not even headers before then
        control = await self.registry.admit(self.client_of(request))
        answering: asyncio.Task[Reply] | None = None
        reply: Reply | None
        try:
            if answer_within is None:
                reply = await made_ready(control, start)
            else:
                answering = asyncio.ensure_future(start())
                reply = await made_ready(control, partial(ready_within, answering, answer_within))
            if slow_headers:
                await made_ready(control, partial(self.clock.sleep_until, started + slow_headers))
        except BaseException:
            if answering is not None:
                answering.cancel()
            self.registry.close(control)
            raise
        log: StreamLog | None = None
        if self.logs is not None:
            log = self.logs.open(resumable=resumable, chat_id=chat_id, headers=headers)
            headers = {**(headers or {}), STREAM_ID_HEADER: log.stream_id}
            encoder.ids = log.ids
        limits = self.limits
        current_record().stream = True
        sse = SSEResponse(
            request,
            self.clock,
            send_timeout=limits.send_timeout_s,
            max_buffered=limits.max_buffered_bytes,
            headers=headers,
        )
        if log is None or not log.resumable:
            return await self._play(request, control, sse, encoder, reply, answering, started,
                                    faults)
        return await self._resumable(request, control, sse, log, encoder, reply, answering,
                                     started, faults)

    async def _resumable(
        self, request: web.Request, control: StreamControl, sse: SSEResponse, log: StreamLog,
        encoder: ReplyEncoder, reply: Reply | None, answering: asyncio.Task[Reply] | None,
        started: float, faults: Sequence[Fault],
    ) -> web.StreamResponse:
        """A resumable reply: played in a task of its own into its log (``resume``), which
        ``request``'s connection reads as long as it stays; a fault that cuts the connection
        at a time cuts only the connection."""
        try:
            await sse.prepare()
        except BaseException as exc:
            await self._release(control, sse, reply, answering)
            if not isinstance(exc, ClientGone):
                raise
            self.stats.started += 1  # (as ``Accounting`` counts a client gone this soon)
            self.stats.disconnected += 1
            current_record().outcome = "disconnected"
            log.finish(self.clock.now())
            return sse.response
        logs = self.logs
        feed = ResumableFeed(
            log, self.clock, self.resume_settings.linger_s, sse, self.stats,
            None if logs is None else partial(logs.read_elsewhere, log.stream_id),
        )
        cuts = [f for f in faults if f.kind in _CUTS and f.when.seconds is not None]
        faults = [f for f in faults if f not in cuts]
        await feed.produce(
            self._play(request, control, feed, encoder, reply, answering, started, faults),
            control,
            sse,
            [(started + (f.when.seconds or 0.0), "reset" if f.kind == "reset" else "truncate")
             for f in cuts],
        )
        return sse.response

    async def _play(
        self, request: web.Request, control: StreamControl, sse: SSEResponse | ResumableFeed,
        encoder: ReplyEncoder, reply: Reply | None, answering: asyncio.Task[Reply] | None,
        started: float, faults: Sequence[Fault],
    ) -> web.StreamResponse:
        """Play the admitted and started reply to ``sse``, and end the stream."""
        limits = self.limits
        record = current_record()
        watch: StreamWatch | None = None
        sink: EventSink = sse
        heartbeat_sink: HeartbeatSink = sse
        injected: InjectedFaults | None = None
        if faults:
            gate = StallGate(sse, self.clock)
            encoder = FaultyEncoder(encoder, in_stream_faults(faults), gate)
            injected = InjectedFaults(encoder, gate, control)
            sink, heartbeat_sink = gate, gate.heartbeats
        try:
            async with Accounting(
                self.stats, sse, encoder, record, request.path, limits.send_timeout_s
            ):
                await sse.prepare()
                record.status = sse.response.status
                clock = LoopClock() if reply is None else reply.watch_clock
                watch = StreamWatch(
                    clock, control, sink=heartbeat_sink, heartbeat=limits.heartbeat_s,
                    limit=self._deadline(clock),
                )
                reset = False
                try:
                    with control.interruptible():
                        if injected is not None:
                            injected.begin(faults, clock, started)
                        if reply is None:
                            assert answering is not None
                            reply = await answered(answering)
                        failure = await reply.play(sink, encoder)
                    if failure is not None:
                        raise UpstreamStreamError(
                            failure.message, error_type=failure.error_type, code=failure.code
                        )
                    ending = b"".join(encoder.event(e) for e in reply.closing_events())
                    ending += encoder.end()
                    record.outcome = "completed"
                except FaultReached as reached:
                    ending, reset = fault_ending(reached, encoder, record)
                except asyncio.CancelledError:
                    reason = control.consume_stop()
                    if reason is None:
                        raise  # the client left
                    if reason == "fault" and injected is not None and injected.reached:
                        ending, reset = fault_ending(injected.reached, encoder, record)
                    else:
                        ending = self._cut_short(reason, encoder, record)
                finally:
                    record.tokens = 0 if reply is None else reply.tokens
                    if injected is not None:
                        injected.cancel()
                        # the event that reached an ending fault went out with the ending
                        record.tokens = max(record.tokens, injected.tokens)
                if injected is not None:
                    await injected.held()  # a stall at the last event delays the ending
                if reset:
                    if ending:
                        await sse.send(ending)
                    sse.reset()
                else:
                    await sse.close(ending)
        finally:
            if watch is not None:
                watch.cancel()
            await self._release(control, sse, reply, answering)
        return sse.response

    async def _release(
        self, control: StreamControl, sse: SSEResponse | ResumableFeed, reply: Reply | None,
        answering: asyncio.Task[Reply] | None,
    ) -> None:
        """A stream's end, however it came: its slot, its connection, and its reply's source
        (or the task still getting the reply ready) let go."""
        self.registry.close(control)
        sse.release()
        if reply is not None:
            await reply.aclose()
        elif answering is not None:
            answering.cancel()

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
        faults: Sequence[Fault] = (),
    ) -> T:
        """A reply answered whole: admitted, limited in time and stopped at shutdown as a
        stream is; a stop answers the error (400 time limit, 503 shutdown). ``clock``: the
        time limit's, when ``work`` waits on another than the pacing clock. ``faults``: an
        error (at any point: nothing is sent before the whole answer) answers its status;
        ``slow_headers`` and ``stall`` delay the answer; ``truncate`` and ``reset`` drop the
        connection without one; ``malformed`` and ``duplicate`` have no whole form."""
        if faults:
            current_record().fault = ",".join(str(fault) for fault in faults)
        error = next((fault for fault in faults if fault.kind == "error"), None)
        if error is not None:
            raise fault_error(error)
        control = await self.registry.admit(self.client_of(request))
        clock = clock or self.clock
        watch = StreamWatch(clock, control, limit=self._deadline(clock))
        delay = sum(f.duration or 0.0 for f in faults if f.kind in ("slow_headers", "stall"))
        try:
            with control.interruptible():
                answer = await work()
                if delay:
                    await self.clock.sleep_until(self.clock.now() + delay)
                dropped = next((f for f in faults if f.kind in ("truncate", "reset")), None)
                if dropped is not None:
                    if dropped.kind == "reset":
                        reset_connection(request)
                    elif request.transport is not None:
                        request.transport.abort()
                return answer
        except asyncio.CancelledError:
            reason = control.consume_stop()
            if reason is None:
                raise
            raise self._stop_error(reason) from None
        finally:
            watch.cancel()
            self.registry.close(control)
