"""Clocks: the pacer's only source of time, injectable so pacing tests are instant and exact."""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Clock", "FakeClock", "LoopClock"]


class Clock(Protocol):
    """Monotonic time in seconds and a sleep to an absolute deadline on that time."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


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
