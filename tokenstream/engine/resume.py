"""A resumable reply: produced into its log, read by whichever connection is attached.

The reply of a resumable stream is played, as every reply is, by the runner, but in a task
of its own and to a ``ResumableFeed`` instead of the connection: its writes go into the
stream's log (``StreamLog.append``) and the feed never makes the reply wait. The connection
that asked, and later one that reconnects, is a reader of the feed (``serve``): it gets
every event after the one it names at once, then each as it is produced. A reader that is
caught up gets the producer's writes directly (``write_nowait``: no task wakes per event);
one that is behind is sent what it misses from the log by its own task.

When no reader is attached, the reply goes on for ``linger_s`` (a reconnect within it
resumes where it left), then it is cancelled. A new reader replaces the one attached (an
``EventSource`` reconnects once the server is done with the old connection, or it may not
know it yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, Literal

from tokenstream.engine.accounting import StreamStats
from tokenstream.engine.clock import Cancellable, TimerClock
from tokenstream.engine.registry import StreamControl
from tokenstream.engine.streamlog import StreamLog
from tokenstream.sse.transport import BATCH_BYTES, ClientGone, ClientStalled, SSEResponse

__all__ = ["Cut", "ResumableFeed", "serve_finished"]

Cut = Literal["reset", "truncate", "replaced"]


class _Reader:
    __slots__ = ("cut", "delivered", "sse", "wake")

    def __init__(self, sse: SSEResponse, delivered: int) -> None:
        self.sse = sse
        self.delivered = delivered
        """The sequence of the last event written to it."""
        self.wake: asyncio.Future[None] | None = None
        self.cut: Cut | None = None

    def notify(self) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)


class ResumableFeed:
    """The sink a resumable reply is played to (``playout.EventSink``, and what the runner's
    ending and heartbeats write to)."""

    __slots__ = ("_checking", "_clock", "_elsewhere", "_linger", "_linger_s", "_reader", "_stats",
                 "batch_bytes", "bytes_sent", "log", "peak_buffered", "producer", "response")

    def __init__(
        self, log: StreamLog, clock: TimerClock, linger_s: float, first: SSEResponse,
        stats: StreamStats, elsewhere: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``stats``: where a reader cut off for not reading is counted (``stalled``).
        ``elsewhere``: whether a reader in another process is attached (a shared store's):
        asked before the reply is given up after ``linger_s``."""
        self.log = log
        self._elsewhere = elsewhere
        self._checking: asyncio.Future[None] | None = None
        self._stats = stats
        self._clock = clock
        self._linger_s = linger_s
        self._linger: Cancellable | None = None
        self._reader: _Reader | None = None
        self.producer: asyncio.Future[Any] | None = None
        self.response = first.response
        self.batch_bytes = BATCH_BYTES
        self.bytes_sent = 0
        self.peak_buffered = 0

    async def produce(
        self, producer: Coroutine[Any, Any, object], control: StreamControl, first: SSEResponse,
        cuts: Sequence[tuple[float, Cut]] = (),
    ) -> None:
        """Make the reply (``producer``, which plays it to this feed) in a task of its own,
        which ``control`` stops, and serve ``first``, the connection that asked for it;
        ``cuts``: when to cut that connection, and how (injected faults: the reply goes on)."""
        task = asyncio.ensure_future(producer)
        control.task = task  # what a stop (time limit, shutdown) cancels
        self.producer = task
        self.log.feed = self
        task.add_done_callback(self.produced)
        task.add_done_callback(_retrieved)
        task.add_done_callback(partial(_let_go, control))
        timers = [self._clock.call_at(when, partial(self.cut, how)) for when, how in cuts]
        try:
            await self.serve(first, 0)
        finally:
            for timer in timers:
                timer.cancel()

    # -- the producer's side -----------------------------------------------------------------

    @property
    def last_write(self) -> float:
        """When the attached connection was last written to (for the heartbeats)."""
        reader = self._reader
        return self._clock.now() if reader is None else reader.sse.last_write

    def write_nowait(self, data: bytes, now: float | None = None) -> bool:
        """Take events the producer made (into the log) or a heartbeat; never waits."""
        reader = self._reader
        log = self.log
        if data[0] == 58:  # b":", a heartbeat comment: only to a reader that is caught up
            if reader is None or reader.delivered != log.last_seq:
                return False
            return self._direct(reader, data, now)
        caught_up = log.last_seq  # (the log holds every write of the producer's)
        log.append(data)
        seq = log.last_seq
        self.bytes_sent += len(data)
        if reader is not None:
            if reader.delivered == caught_up and reader.wake is not None:
                # caught up and waiting: the write goes straight to its connection
                try:
                    if reader.sse.write_nowait(data, now):
                        reader.delivered = seq
                        return True
                except ClientGone:
                    pass  # its task finds the connection gone
            reader.notify()  # its task sends what it misses from the log
        return True

    def _direct(self, reader: _Reader, data: bytes, now: float | None) -> bool:
        try:
            return reader.sse.write_nowait(data, now)
        except ClientGone:
            reader.notify()  # its task finds the connection gone
            return False

    async def send(self, data: bytes) -> None:
        self.write_nowait(data)

    async def prepare(self) -> None:
        """(The first reader's response was prepared before the reply started.)"""

    async def close(self, ending: bytes = b"") -> None:
        """The reply's ending: the last events, then the stream is finished."""
        if ending:
            self.write_nowait(ending)
        self._finish()

    def reset(self) -> None:
        """A fault that ends the stream with a reset connection (at a token count)."""
        self._finish()
        self.cut("reset")

    def abort(self) -> None:
        self._finish()
        self.cut("reset")

    def release(self) -> None:
        """(Each reader's connection is its own task's to release.)"""

    def cut(self, how: Cut) -> None:
        """Cut the attached connection (an injected fault); the reply goes on."""
        reader = self._reader
        if reader is not None:
            reader.cut = how
            reader.notify()

    def _finish(self) -> None:
        self.log.finish(self._clock.now())
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._reader is not None:
            self._reader.notify()

    def produced(self, _: object = None) -> None:
        """The producer ended (however): the log is complete."""
        self._finish()
        self.log.feed = None
        self.producer = None  # (the task holds its traceback's frames, which hold this feed)

    # -- a reader's side ---------------------------------------------------------------------

    async def serve(self, sse: SSEResponse, after: int) -> None:
        """Write to ``sse`` (prepared) every event after ``after``, then each as it comes,
        until the reply ended, the connection is gone, or a newer reader replaced it."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._reader is not None:
            self.cut("replaced")
        reader = self._reader = _Reader(sse, after)
        loop = asyncio.get_running_loop()
        log = self.log
        try:
            while reader.cut is None:
                if reader.delivered < log.last_seq:
                    if not log.has_after(reader.delivered):
                        reader.cut = "reset"  # it fell behind what the log keeps
                        break
                    upto = log.last_seq
                    await sse.send(log.after(reader.delivered))
                    reader.delivered = upto
                elif log.finished:
                    await sse.close()
                    return
                else:
                    if sse.request.transport is None or sse.request.transport.is_closing():
                        return
                    reader.wake = loop.create_future()
                    try:
                        await reader.wake
                    finally:
                        reader.wake = None
            if reader.cut == "truncate":
                await sse.close()
            elif reader.cut == "reset":
                sse.reset()
            else:
                sse.abort()
        except ClientStalled:
            self._stats.stalled += 1
            sse.abort()
        except ClientGone:
            pass
        finally:
            sse.release()
            if self._reader is reader:
                self._reader = None
                if not log.finished:
                    self._left()

    def _left(self) -> None:
        """No reader: the reply goes on for ``linger_s``, then it is cancelled."""
        if self._linger_s <= 0:
            self._give_up()
        else:
            self._linger = self._clock.call_at(
                self._clock.now() + self._linger_s, self._give_up
            )

    def _give_up(self) -> None:
        self._linger = None
        if self._reader is not None or self.producer is None:
            return
        if self._elsewhere is None:
            self.producer.cancel()
        elif self._checking is None:
            self._checking = asyncio.ensure_future(self._give_up_unless_read_elsewhere())

    async def _give_up_unless_read_elsewhere(self) -> None:
        """A reader in another process keeps the reply going for another ``linger_s`` (at
        least a second: its presence is a key it refreshes about that often)."""
        assert self._elsewhere is not None
        try:
            read = await self._elsewhere()
        except Exception:
            read = False
        finally:
            self._checking = None
        if self._reader is not None or self.producer is None or self._linger is not None:
            return
        if read:
            self._linger = self._clock.call_at(
                self._clock.now() + max(self._linger_s, 1.0), self._give_up
            )
        else:
            self.producer.cancel()


def _retrieved(task: asyncio.Future[Any]) -> None:
    """(A producer's failure is its own stream's, reported in it; nobody awaits the task.)"""
    if not task.cancelled():
        task.exception()


def _let_go(control: StreamControl, _: object) -> None:
    """A producer that ended: its control lets go of it (a cancelled task keeps its
    traceback, whose frames keep the control: a reference cycle otherwise)."""
    control.task = None


async def serve_finished(log: StreamLog, sse: SSEResponse, after: int) -> None:
    """A reconnect to a stream that has ended: what it missed, then the end of the body."""
    try:
        await sse.close(log.after(after))
    except ClientStalled:
        sse.abort()
    except ClientGone:
        pass
    finally:
        sse.release()
