"""A shared scheduler: one loop timer, and buckets of everything due in the same millisecond.

``LoopClock`` gives each sleeping stream its own ``loop.call_at`` timer, so thousands of
streams keep thousands of entries in the loop's timer heap and pay one heap operation and
one timer callback per token each. ``BucketClock`` rounds each deadline *up* to a bucket
(1 ms by default), and keeps the buckets in a heap of its own with a single loop timer,
armed for the earliest one: the streams due in the same millisecond are all woken in one
pass, and an idle stream costs a list entry instead of a loop timer handle (about 0.6 KiB
with uvloop).

``call_at`` puts a callback in the same buckets. ``enter`` puts a ``Recurring`` entry there
itself: a pass calls its ``on_due`` with the time and puts it back in the bucket of the
deadline it returns, so a playing stream (``tokenstream.engine.playout``) costs no timer object
and no ``call_at`` per event, and the events of every stream due in a millisecond are
written from that one timer, without waking any task.

The contract is the ``Clock`` protocol's: ``sleep_until`` does not return before its
deadline (to the loop's own timer precision: asyncio's is about a nanosecond, uvloop's a
millisecond). Rounding up costs at most one bucket of lateness (half a bucket on average),
and because every deadline of a stream is rounded the same way, the gaps between its
events stay exact to the bucket.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

from tokenstream.engine.clock import Cancellable

__all__ = ["BucketClock", "Recurring", "TimerLoop"]

log = logging.getLogger(__name__)


class _Call:
    """A ``call_at`` callback waiting in a bucket.

    Cancelling takes it out of the bucket at once (and the bucket's timer with the last one),
    so a stream whose client left keeps nothing alive until its next deadline.
    """

    __slots__ = ("bucket", "callback", "cancelled", "clock")

    def __init__(self, callback: Callable[[], None], clock: BucketClock, bucket: int) -> None:
        self.callback = callback
        self.clock = clock
        self.bucket: int | None = bucket  # None once its pass took it
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self.bucket is not None:
                self.clock._drop(self.bucket, self)

    def on_due(self, now: float) -> None:
        """A pass calls a ``call_at`` callback as it calls a ``Recurring`` entry, once."""
        if not self.cancelled:
            self.callback()


class Recurring(Protocol):
    """An entry that a pass calls, again and again, at the deadlines it gives
    (``BucketClock.enter``)."""

    bucket: int | None
    """The bucket it waits in; the clock's to set."""

    def on_due(self, now: float) -> float | None:
        """Do what is due at ``now``; the deadline to be called at next, or None to leave."""
        ...


class TimerLoop(Protocol):
    """The part of an event loop the scheduler uses (injectable for tests)."""

    def time(self) -> float: ...

    def is_running(self) -> bool: ...

    def call_at(self, when: float, callback: Any, *args: Any) -> Cancellable: ...

    def call_soon(self, callback: Any, *args: Any) -> Cancellable: ...

    def create_future(self) -> asyncio.Future[Any]: ...


class BucketClock:
    """A ``Clock`` whose sleepers share one timer per ``resolution`` seconds of deadline.

    It serves one event loop at a time (as a server has): the loop it first runs on, and
    after that loop stops, the next one.
    """

    def __init__(self, resolution: float = 0.001, *, loop: TimerLoop | None = None) -> None:
        if not resolution > 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.resolution = resolution
        self._fixed_loop = loop
        self._loop: TimerLoop | None = None
        # bucket number -> what waits for it: futures of sleeping streams, ``call_at`` calls,
        # entered ``Recurring`` entries
        self._buckets: dict[int, list[asyncio.Future[None] | _Call | Recurring]] = {}
        self._heap: list[int] = []  # the buckets' numbers (and some emptied ones, skipped)
        self._timer: Cancellable | None = None
        self._timer_bucket: int | None = None  # what the loop timer is armed for
        self._firing = False

    def _adopt_loop(self) -> TimerLoop:
        """The loop to schedule on: the running one, remembered while it runs.

        ``asyncio.get_running_loop`` costs more than the rest of a wake-up, so it is asked
        only when the remembered loop has stopped (a test's loop, a restarted server): the
        timers of the old loop are gone with it.
        """
        loop: TimerLoop = self._fixed_loop or asyncio.get_running_loop()
        if loop is not self._loop:
            self._buckets.clear()
            self._heap.clear()
            self._timer = self._timer_bucket = None
            self._loop = loop
        return loop

    def _running_loop(self) -> TimerLoop:
        loop = self._loop
        if loop is None or not loop.is_running():
            return self._adopt_loop()
        return loop

    def now(self) -> float:
        return self._running_loop().time()

    @property
    def pending_timers(self) -> int:
        """Buckets with something waiting in them (one loop timer serves them all)."""
        return len(self._buckets)

    def bucket_of(self, deadline: float) -> int:
        """The bucket a deadline falls in; it is woken at ``bucket * resolution``."""
        # The slack of a millionth of a bucket keeps a deadline that is a whole number of
        # buckets (0.007 / 0.001 == 7.000000000000001) out of the next bucket; waking that
        # much early is below the loop's own clock resolution.
        return math.ceil(deadline / self.resolution - 1e-6)

    async def sleep_until(self, deadline: float) -> None:
        loop = self._running_loop()
        if deadline <= loop.time():
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._enter(loop, self.bucket_of(deadline), waiter)
        await waiter

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Cancellable:
        loop = self._running_loop()
        if deadline <= loop.time():
            return loop.call_soon(callback)
        bucket = self.bucket_of(deadline)
        call = _Call(callback, self, bucket)
        self._enter(loop, bucket, call)
        return call

    def enter(self, entry: Recurring, deadline: float) -> None:
        """Call ``entry.on_due`` from the pass of ``deadline``'s bucket, and again at every
        deadline it returns, until it returns None or ``leave`` takes it out. Never from within
        this call: a deadline already passed is served by the next pass."""
        loop = self._running_loop()
        bucket = self.bucket_of(deadline)
        entry.bucket = bucket
        self._enter(loop, bucket, entry)

    def leave(self, entry: Recurring) -> None:
        """Take an entered entry out of its bucket (nothing happens if it is not in one)."""
        bucket = entry.bucket
        if bucket is not None:
            entry.bucket = None
            self._drop(bucket, entry)

    def _drop(self, bucket: int, entry: _Call | Recurring) -> None:
        waiting = self._buckets.get(bucket)
        if waiting is None:
            return  # it fired already
        try:
            waiting.remove(entry)
        except ValueError:
            return
        if not waiting:
            del self._buckets[bucket]  # its heap entry is skipped when it comes up
            if not self._buckets and not self._firing:
                self._disarm()

    def _enter(
        self, loop: TimerLoop, bucket: int, entry: asyncio.Future[None] | _Call | Recurring
    ) -> None:
        waiting = self._buckets.get(bucket)
        if waiting is not None:
            waiting.append(entry)
            return
        self._buckets[bucket] = [entry]
        heapq.heappush(self._heap, bucket)
        if not self._firing and (self._timer_bucket is None or bucket < self._timer_bucket):
            self._arm(loop, bucket)

    def _arm(self, loop: TimerLoop, bucket: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(bucket * self.resolution, self._fire)
        self._timer_bucket = bucket

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_bucket = None
        self._heap.clear()

    def _fire(self) -> None:
        loop = self._loop
        armed_for = self._timer_bucket
        self._timer = self._timer_bucket = None
        if loop is None or armed_for is None:
            return
        # every bucket whose time has come; the one armed for even if the loop woke a hair
        # early
        due_by = max(armed_for, math.floor(loop.time() / self.resolution + 1e-6))
        heap = self._heap
        self._firing = True
        try:
            while heap and heap[0] <= due_by:
                entries = self._buckets.pop(heapq.heappop(heap), None)
                if entries is not None:
                    self._wake(loop, entries)
        finally:
            self._firing = False
        while heap and heap[0] not in self._buckets:
            heapq.heappop(heap)
        if heap:
            self._arm(loop, heap[0])

    def _wake(
        self, loop: TimerLoop, entries: list[asyncio.Future[None] | _Call | Recurring]
    ) -> None:
        for entry in entries:
            if isinstance(entry, asyncio.Future):
                if not entry.done():  # a cancelled sleeper (its client left) is skipped
                    entry.set_result(None)
            else:  # a call_at callback, or a Recurring entry: once per event of every stream
                entry.bucket = None
                try:
                    deadline = entry.on_due(loop.time())
                except Exception:  # one failing callback must not strand the others
                    log.exception("scheduled callback failed")
                    continue
                if deadline is not None:
                    bucket = entry.bucket = self.bucket_of(deadline)
                    self._enter(loop, bucket, entry)
