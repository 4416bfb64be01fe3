"""Test helpers shared by the test modules (importable as ``support``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from tokenstream.sse_parser import ServerSentEvent, SSEDecoder

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def parse_sse(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()


class ManualClock:
    """A clock whose sleeps finish only when the test advances it past their deadline."""

    def __init__(self) -> None:
        self._now = 0.0
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((deadline, waiter))
        await waiter

    def call_at(self, deadline: float, callback: Callable[[], None]) -> asyncio.Future[None]:
        """A sleep that calls ``callback`` when it ends; cancel the returned future to drop it."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(lambda done: None if done.cancelled() else callback())
        if deadline <= self._now:
            waiter.set_result(None)
        else:
            self._waiters.append((deadline, waiter))
        return waiter

    def advance(self, seconds: float) -> None:
        self._now += seconds
        due = [(d, w) for d, w in self._waiters if d <= self._now]
        self._waiters = [(d, w) for d, w in self._waiters if d > self._now]
        for _, waiter in due:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, waiter in self._waiters if not waiter.done())


async def wait_for(condition: Callable[[], bool], *, limit_s: float = 10.0) -> None:
    """Let the loop (and its I/O) run until ``condition`` holds; a bound, not a timing check."""
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110 - polls state owned by the server under test
            await asyncio.sleep(0)
