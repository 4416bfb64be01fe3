"""Clocks: the pacer's only source of time, injectable so pacing tests are instant and exact."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol

__all__ = ["Cancellable", "Clock", "FakeClock", "LoopClock", "TimerClock"]


class Clock(Protocol):
    """Monotonic time in seconds and a sleep to an absolute deadline on that time."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class TimerClock(Clock, Protocol):
    """A clock that can also call a function at a deadline (what ``playout`` runs on)."""

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Cancellable:
        """Call ``callback`` from the event loop, not before ``deadline`` (and never from
        within this call, even when the deadline has passed)."""
        ...


class LoopClock:
    """The running event loop's monotonic clock, sleeping with ``loop.call_at``.

    Waking at an absolute deadline (rather than ``sleep(interval)`` after each write) keeps a
    late wake-up from shifting every later event.
    """

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if deadline <= loop.time():
            return
        waiter: asyncio.Future[None] = loop.create_future()
        handle = loop.call_at(deadline, _wake, waiter)
        try:
            await waiter
        finally:
            handle.cancel()

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_at(deadline, callback)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class FakeClock:
    """Virtual time for tests: it moves only when everything waits on it.

    A sleep jumps to its deadline at once. Timers (``call_at``) wait in deadline order: one
    already due runs on the next loop turn; to move time forward, the clock first lets the
    loop settle for ``SETTLE_TURNS`` turns (what is ready runs, loopback I/O completes), then
    jumps to the earliest deadline and calls it. So a test of an hour-long stream runs at
    once, and the timers of one stream (its next event, its heartbeat, its time limit) fire
    in the order their deadlines say. ``sleeps`` records every deadline as it is reached.
    """

    SETTLE_TURNS = 8

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.sleeps: list[float] = []
        self._due: list[tuple[float, int, _FakeTimer]] = []
        self._order = itertools.count()
        self._turn: asyncio.Handle | None = None
        self._settled = 0

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep_until(self, deadline: float) -> None:
        """A single sleeper's view, as the pacer's tests take it: the clock jumps to the
        deadline at once."""
        self.sleeps.append(deadline)
        if deadline > self._now:
            self._now = deadline
        await asyncio.sleep(0)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Cancellable:
        """The callback runs when ``deadline`` is the earliest thing waited for (from a later
        loop turn, never from within this call)."""
        timer = _FakeTimer(callback)
        heapq.heappush(self._due, (deadline, next(self._order), timer))
        if self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self._next_due)
        return timer

    def _next_due(self) -> None:
        self._turn = None
        while self._due and self._due[0][2].cancelled:
            heapq.heappop(self._due)
        if not self._due:
            return
        loop = asyncio.get_running_loop()
        if self._due[0][0] > self._now and self._settled < self.SETTLE_TURNS:
            self._settled += 1
            self._turn = loop.call_soon(self._next_due)
            return
        self._settled = 0
        deadline, _, timer = heapq.heappop(self._due)
        if self._due:
            self._turn = loop.call_soon(self._next_due)
        if deadline > self._now:
            self._now = deadline
        self.sleeps.append(deadline)
        timer.cancelled = True
        timer.callback()


class _FakeTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
