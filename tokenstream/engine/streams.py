"""Stream lifetimes: how many run at once, how long one may run, how they end at shutdown.

    StreamRegistry.open()   429 beyond max_concurrent_streams; 503 once shutdown began
          │
    StreamControl           one per running reply: its task and whether it must stop
          │   the pacer sleeps through DeadlineClock: a sleep past the stream's deadline
          │   raises StreamTimeLimit (max_stream_duration_s)
          │   StreamRegistry.shutdown(grace): streams may finish for ``grace`` seconds; then
          │   each remaining one is stopped: its task is cancelled where it waits for the next
          │   piece, and the handler turns that into a final event and the sentinel
    StreamRegistry.close()

Cancelling is the one way to interrupt every kind of wait (a pacing sleep, an upstream read),
so ``stop()`` cancels, and ``consume_stop()`` tells the handler that the cancellation was ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from tokenstream.dialects.wire import WireFormat
from tokenstream.engine.clock import Clock
from tokenstream.errors import TooManyRequests, Unavailable, UpstreamStreamError
from tokenstream.server.accesslog import AccessRecord
from tokenstream.sse.transport import ClientGone, ClientStalled, SSEResponse

__all__ = [
    "SHUTTING_DOWN",
    "STREAM_TIME_LIMIT",
    "DeadlineClock",
    "StreamControl",
    "StreamRegistry",
    "StreamStats",
    "StreamTimeLimit",
    "interruption_ending",
    "tracked_stream",
]

STREAM_TIME_LIMIT = (
    "The reply reached this server's maximum duration of {limit:g} s "
    "(server.max_stream_duration_s) and was ended. Ask for a faster pace or a shorter reply."
)
SHUTTING_DOWN = "The server is shutting down; this stream was ended before its reply was complete."


class StreamTimeLimit(Exception):
    """The stream reached ``server.max_stream_duration_s``."""


class DeadlineClock:
    """Wraps the pacer's clock: no sleep goes past ``deadline``; reaching it ends the stream."""

    __slots__ = ("_clock", "deadline")

    def __init__(self, clock: Clock, deadline: float | None) -> None:
        self._clock = clock
        self.deadline = deadline

    def now(self) -> float:
        return self._clock.now()

    def sleep_until(self, deadline: float) -> Coroutine[Any, Any, None]:
        # not a coroutine itself: within the limit it hands out the inner clock's sleep,
        # saving a frame on every event
        if self.deadline is not None and deadline > self.deadline:
            return self._sleep_to_limit(self.deadline)
        return self._clock.sleep_until(deadline)

    async def _sleep_to_limit(self, limit: float) -> None:
        await self._clock.sleep_until(limit)
        raise StreamTimeLimit


class StreamControl:
    """The handle the registry keeps on one running reply."""

    __slots__ = ("_interruptible", "_stop_cancelled", "stop_requested", "task")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.stop_requested = False
        self._interruptible = False
        self._stop_cancelled = False

    def stop(self) -> None:
        """Ask the stream to end now (shutdown). Safe to call more than once."""
        if self.stop_requested:
            return
        self.stop_requested = True
        if self._interruptible:
            self._cancel()

    def interruptible(self) -> StreamControl:
        """A context: while inside, ``stop()`` cancels the task; outside it only sets the flag.

        (The control is its own context manager: no generator frame stays alive with every
        open stream.)
        """
        return self

    def __enter__(self) -> None:
        self._interruptible = True
        if self.stop_requested:
            self._cancel()

    def __exit__(self, *exc_info: object) -> None:
        self._interruptible = False

    def consume_stop(self) -> bool:
        """True when the CancelledError being handled came from ``stop()`` alone."""
        if not self._stop_cancelled:
            return False
        self._stop_cancelled = False
        # a cancellation from elsewhere as well (the client left) still counts
        return self.task is None or self.task.uncancel() == 0

    def _cancel(self) -> None:
        if self.task is not None and not self.task.done() and not self._stop_cancelled:
            self._stop_cancelled = True
            self.task.cancel()


class StreamRegistry:
    """Every running reply, the concurrency limit, and the shutdown sequence."""

    def __init__(self, max_concurrent: int | None, retry_after_s: int) -> None:
        self.max_concurrent = max_concurrent
        self.retry_after_s = retry_after_s
        self.closing = False
        self._active: set[StreamControl] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()

    def __len__(self) -> int:
        return len(self._active)

    def open(self) -> StreamControl:
        retry = {"Retry-After": str(self.retry_after_s)}
        if self.closing:
            raise Unavailable(
                "The server is shutting down and accepts no new streams; retry on another "
                "instance or after it restarts.",
                code="server_shutting_down",
                headers=retry,
            )
        if self.max_concurrent is not None and len(self._active) >= self.max_concurrent:
            raise TooManyRequests(
                f"Too many concurrent streams: this server runs at most {self.max_concurrent} "
                f"at once (server.max_concurrent_streams). Retry after {self.retry_after_s} s.",
                code="rate_limit_exceeded",
                headers=retry,
            )
        control = StreamControl(asyncio.current_task())
        self._active.add(control)
        self._idle.clear()
        return control

    def close(self, control: StreamControl) -> None:
        self._active.discard(control)
        if not self._active:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def hurry(self) -> None:
        """End the grace period now (a second SIGINT/SIGTERM)."""
        self._hurry.set()

    async def shutdown(self, grace_s: float, final_timeout_s: float) -> int:
        """Refuse new streams, let running ones finish for ``grace_s``, then stop the rest.

        Returns how many streams had to be stopped. ``final_timeout_s`` bounds the wait for
        the stopped streams to write their last event (a stalled client's write times out
        sooner, at ``send_timeout_s``).
        """
        self.closing = True
        if self._active and grace_s > 0:
            await _first_of(self._idle.wait(), self._hurry.wait(), within=grace_s)
        remaining = list(self._active)
        for control in remaining:
            control.stop()
        if self._active:
            await _first_of(self._idle.wait(), within=final_timeout_s)
        return len(remaining)


async def _first_of(*waits: Coroutine[Any, Any, Any], within: float) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


log = logging.getLogger("tokenstream.server.app")


@dataclass(slots=True)
class StreamStats:
    active: int = 0
    started: int = 0
    completed: int = 0
    disconnected: int = 0
    failed: int = 0
    events_sent: int = 0
    stalled: int = 0  # disconnected by send_timeout_s (counted in disconnected too)


class tracked_stream:
    """How a started stream ends, counted and logged the same way for every source.

    A client that left or stalled gets nothing more (a stalled one is aborted, which frees
    its queue); any other error is reported to the client as an error event and the
    sentinel. A cancellation (the handler's, when the client disconnects) propagates.

    A class rather than an ``asynccontextmanager``: it stays alive as long as the stream, and
    a slotted object is a fraction of a suspended generator and its wrapper.
    """

    __slots__ = ("path", "record", "send_timeout", "sse", "stats", "wire")

    def __init__(
        self,
        stats: StreamStats,
        sse: SSEResponse,
        wire: WireFormat,
        record: AccessRecord,
        *,
        path: str,
        send_timeout: float | None,
    ) -> None:
        self.stats = stats
        self.sse = sse
        self.wire = wire
        self.record = record
        self.path = path
        self.send_timeout = send_timeout

    async def __aenter__(self) -> None:
        self.stats.active += 1
        self.stats.started += 1

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        stats, sse, record, path = self.stats, self.sse, self.record, self.path
        try:
            if exc is None:
                stats.completed += 1
            elif isinstance(exc, ClientStalled):
                stats.disconnected += 1
                stats.stalled += 1
                record.outcome = "stalled"
                record.peak_buffered = sse.peak_buffered
                log.info("client stalled on %s: no write completed in %g s, %d bytes queued; "
                         "connection aborted", path, self.send_timeout, sse.peak_buffered)
                sse.abort()
            elif isinstance(exc, ClientGone):
                stats.disconnected += 1
                record.outcome = "disconnected"
                log.info("client left %s after %d completion tokens", path, record.tokens)
            elif isinstance(exc, asyncio.CancelledError):
                stats.disconnected += 1
                record.outcome = "disconnected"
                log.info("client left %s after %d completion tokens (handler cancelled)",
                         path, record.tokens)
                return False
            elif isinstance(exc, UpstreamStreamError):
                log.warning("upstream failed after %d tokens on %s: %s", record.tokens, path,
                            exc.message)
                await _report_failure(
                    stats, sse, record, self.wire.error(exc.message, exc.error_type, exc.code)
                )
            elif isinstance(exc, Exception):
                log.error("stream failed on %s", path, exc_info=exc)
                await _report_failure(
                    stats, sse, record,
                    self.wire.error("The stream failed on the server.", "server_error", None),
                )
            else:
                return False  # KeyboardInterrupt, SystemExit, GeneratorExit: not ours
            return True
        finally:
            stats.active -= 1


async def _report_failure(
    stats: StreamStats, sse: SSEResponse, record: AccessRecord, error_event: bytes
) -> None:
    stats.failed += 1
    record.outcome = "failed"
    try:
        await sse.close(error_event)
    except ClientGone:
        sse.abort()


def interruption_ending(
    interruption: StreamTimeLimit | asyncio.CancelledError,
    control: StreamControl,
    wire: WireFormat,
    record: AccessRecord,
    limit_s: float | None,
) -> bytes | None:
    """The closing events of a stream cut short by its time limit or by shutdown.

    None for a cancellation that is not the registry's shutdown request (the client left):
    the caller re-raises it with a bare ``raise``. (Raising it here would keep this frame,
    which holds the exception, in the exception's own traceback: a reference cycle that
    leaves the whole stream to the cyclic garbage collector.)
    """
    if isinstance(interruption, StreamTimeLimit):
        record.outcome = "time_limit"
        return wire.error(
            STREAM_TIME_LIMIT.format(limit=limit_s or 0.0),
            "invalid_request_error",
            "stream_duration_exceeded",
        )
    if not control.consume_stop():
        return None
    record.outcome = "shutdown"
    return wire.error(SHUTTING_DOWN, "server_error", "server_shutting_down")
