"""Test helpers shared by the test modules (importable as ``support``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
from aiohttp import web
from aiohttp.test_utils import TestClient

from tokenstream.sse.parser import ServerSentEvent, SSEDecoder

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def parse_sse(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()


def canned_transport(body: bytes, *, content_type: str = "text/event-stream",
                     path: str | None = None) -> httpx2.MockTransport:
    """Answers every request 200 with ``body``: an official SDK reads bytes we made, with no
    server. With ``path``, each request must be for that path."""
    def handler(request: httpx2.Request) -> httpx2.Response:
        if path is not None:
            assert request.url.path == path
        return httpx2.Response(200, headers={"content-type": content_type}, content=body)

    return httpx2.MockTransport(handler)


def canned_client(body: bytes, *, content_type: str = "text/event-stream",
                  path: str | None = None) -> httpx2.Client:
    """An SDK's ``http_client`` that reads ``body`` (see ``canned_transport``)."""
    return httpx2.Client(transport=canned_transport(body, content_type=content_type, path=path))


def canned_async_client(body: bytes) -> httpx2.AsyncClient:
    """An async SDK's ``http_client`` that reads ``body`` as an event stream."""
    return httpx2.AsyncClient(transport=canned_transport(body))


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


async def eventually(check: Callable[[], Awaitable[bool]], *, limit_s: float = 10.0) -> None:
    """Ask ``check`` (a request to a server under test, say) again until it holds; a bound,
    not a timing check. (``wait_for`` is for state the test reads without waiting.)"""
    async with asyncio.timeout(limit_s):
        while not await check():  # noqa: ASYNC110 - asks the server under test
            await asyncio.sleep(0.01)


class _Handle:
    def __init__(self, when: float, callback: Any, args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimerLoop:
    """The loop surface ``BucketClock`` uses; time moves only when the test advances it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.handles: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def is_running(self) -> bool:
        return True

    def call_at(self, when: float, callback: Any, *args: Any) -> _Handle:
        handle = _Handle(when, callback, args)
        self.handles.append(handle)
        return handle

    def call_soon(self, callback: Any, *args: Any) -> _Handle:
        return self.call_at(self.now, callback, *args)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    @property
    def armed(self) -> list[float]:
        return sorted(h.when for h in self.handles if not h.cancelled)

    async def advance_to(self, until: float) -> None:
        """Fire every timer due by ``until`` in order, letting the woken tasks run."""
        while True:
            due = [h for h in self.handles if not h.cancelled and h.when <= until]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.handles.remove(handle)
            self.now = max(self.now, handle.when)
            handle.callback(*handle.args)
            for _ in range(5):
                await asyncio.sleep(0)
        self.now = until
        for _ in range(5):
            await asyncio.sleep(0)


class JumpingTimerLoop:
    """The loop surface ``BucketClock`` uses, on the running loop, whose time jumps to each
    timer's when it fires (as ``FakeClock`` does): code on it runs at once, exactly on time."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def is_running(self) -> bool:
        return True

    def call_at(self, when: float, callback: Any, *args: Any) -> asyncio.Handle:
        return asyncio.get_running_loop().call_soon(self._jump, when, callback, args)

    def call_soon(self, callback: Any, *args: Any) -> asyncio.Handle:
        return asyncio.get_running_loop().call_soon(callback, *args)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def _jump(self, when: float, callback: Any, args: tuple[Any, ...]) -> None:
        self.now = max(self.now, when)
        callback(*args)


def scripted_reply(keyword: str) -> str:
    """The reply text of the embedded default rule whose pattern names ``keyword``."""
    from tokenstream.config import defaults

    return next(
        rule["reply"] for rule in defaults.DEFAULT_RULES
        if keyword in rule["match"] and "reply" in rule and "tool_result" not in rule
    )
