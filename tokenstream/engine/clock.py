"""Clocks: the pacer's only source of time, injectable so pacing tests are instant and exact."""

from __future__ import annotations

import asyncio
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
    """A clock that only moves when something sleeps on it; records every sleep."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep_until(self, deadline: float) -> None:
        self.sleeps.append(deadline)
        if deadline > self._now:
            self._now = deadline
        await asyncio.sleep(0)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Cancellable:
        """Like a sleep: the clock jumps to ``deadline`` when the callback runs (next loop turn)."""
        self.sleeps.append(deadline)
        return asyncio.get_running_loop().call_soon(self._jump_and_call, deadline, callback)

    def _jump_and_call(self, deadline: float, callback: Callable[[], None]) -> None:
        if deadline > self._now:
            self._now = deadline
        callback()
