"""A shared scheduler: one loop timer per time bucket wakes every stream due in it.

``LoopClock`` gives each sleeping stream its own ``loop.call_at`` timer, so thousands of
streams keep thousands of entries in the loop's timer heap and pay one heap operation and
one timer callback per token each. ``BucketClock`` rounds each deadline *up* to a bucket
(1 ms by default) and keeps one timer per bucket: the streams due in the same millisecond
share that timer and are all woken in one pass.

The contract is the ``Clock`` protocol's: ``sleep_until`` does not return before its
deadline (to the loop's own timer precision: asyncio's is about a nanosecond, uvloop's a
millisecond). Rounding up costs at most one bucket of lateness (half a bucket on average),
and because every deadline of a stream is rounded the same way, the gaps between its
events stay exact to the bucket.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

__all__ = ["BucketClock", "TimerLoop"]


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class TimerLoop(Protocol):
    """The part of an event loop the scheduler uses (injectable for tests)."""

    def time(self) -> float: ...

    def is_running(self) -> bool: ...

    def call_at(self, when: float, callback: Any, *args: Any) -> _Cancellable: ...

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
        # bucket number -> futures of the streams sleeping until that bucket
        self._buckets: dict[int, list[asyncio.Future[None]]] = {}
        self._timers: dict[int, _Cancellable] = {}

    def _adopt_loop(self) -> TimerLoop:
        """The loop to schedule on: the running one, remembered while it runs.

        ``asyncio.get_running_loop`` costs more than the rest of a wake-up, so it is asked
        only when the remembered loop has stopped (a test's loop, a restarted server): the
        timers of the old loop are gone with it.
        """
        loop: TimerLoop = self._fixed_loop or asyncio.get_running_loop()
        if loop is not self._loop:
            self._buckets.clear()
            self._timers.clear()
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
        """Loop timers currently armed: at most one per distinct bucket."""
        return len(self._timers)

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
        bucket = self.bucket_of(deadline)
        waiter: asyncio.Future[None] = loop.create_future()
        sleepers = self._buckets.get(bucket)
        if sleepers is None:
            self._buckets[bucket] = [waiter]
            self._timers[bucket] = loop.call_at(bucket * self.resolution, self._fire, bucket)
        else:
            sleepers.append(waiter)
        await waiter

    def _fire(self, bucket: int) -> None:
        self._timers.pop(bucket, None)
        for waiter in self._buckets.pop(bucket, ()):
            if not waiter.done():  # a cancelled sleeper (its client left) is skipped
                waiter.set_result(None)
