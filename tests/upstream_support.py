"""Helpers for the upstream tests: a scriptable fake upstream, OpenAI chunks, a sim clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tokenstream.sse.parser import ServerSentEvent, SSEDecoder

UPSTREAM_MODEL = "upstream-model-2024"


def chunk(
    content: str | None = None,
    *,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    role: bool = False,
    model: str = UPSTREAM_MODEL,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` as an OpenAI server streams it."""
    body: dict[str, Any] = dict(delta or {})
    if role:
        body = {"role": "assistant", "content": "", "refusal": None, **body}
    if content is not None:
        body["content"] = content
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_upstream",
        "choices": [{"index": 0, "delta": body, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(prompt: int, completion: int, model: str = UPSTREAM_MODEL) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def sse(payload: Any, *, ensure_ascii: bool = False) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=ensure_ascii)
    return b"data: " + data.encode("utf-8") + b"\n\n"


DONE = b"data: [DONE]\n\n"


def reply_stream(
    deltas: Iterable[str], *, usage: bool = False, ensure_ascii: bool = False
) -> bytes:
    """A whole streamed reply: role chunk, one chunk per delta, finish, (usage), [DONE]."""
    out = sse(chunk(role=True))
    deltas = list(deltas)
    for delta in deltas:
        out += sse(chunk(delta), ensure_ascii=ensure_ascii)
    out += sse(chunk(finish="stop"))
    if usage:
        out += sse(usage_chunk(10, len(deltas)))
    return out + DONE


def parse_sse(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()


def openai_text(events: Iterable[ServerSentEvent]) -> str:
    text = ""
    for event in events:
        if event.data == "[DONE]":
            break
        payload = json.loads(event.data)
        for choice in payload.get("choices", []):
            text += choice["delta"].get("content") or ""
    return text


Behaviour = Callable[[web.Request, "FakeUpstream"], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    headers: dict[str, str]
    body: Any


@dataclass
class FakeUpstream:
    """An OpenAI-compatible server whose answer is a script; it records what it saw.

    ``closed`` is set, and ``closed_at`` stamped on the loop's clock, when a streaming
    handler ends for any reason, in particular when the proxy closes the connection
    (the test server runs with handler cancellation, so that cancels the handler at once).
    """

    behaviour: Behaviour | None = None
    seen: list[Seen] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    closed_at: float | None = None
    cancelled: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(dict(request.headers), None))
        model = {"id": UPSTREAM_MODEL, "object": "model", "created": 1, "owned_by": "upstream"}
        if "model" not in request.match_info:
            return web.json_response({"object": "list", "data": [model]})
        if request.match_info["model"] != UPSTREAM_MODEL:
            return web.json_response(
                {"error": {"message": "no such model", "type": "invalid_request_error",
                           "param": "model", "code": "model_not_found"}},
                status=404,
            )
        return web.json_response(model)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append(Seen(dict(request.headers), json.loads(raw)))
        assert self.behaviour is not None
        try:
            return await self.behaviour(request, self)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed_at = asyncio.get_running_loop().time()
            self.closed.set()


async def start_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def streams(*parts: bytes, then: str = "end", gate: asyncio.Event | None = None) -> Behaviour:
    """Write each part as its own write; wait for ``gate`` if given; then ``end`` (close
    cleanly), ``hang`` or ``drop`` (close the connection mid-body)."""

    async def behaviour(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        response = await start_stream(request)
        for part in parts:
            await response.write(part)
        if gate is not None:
            await gate.wait()
        if then == "hang":
            await asyncio.Event().wait()
        if then == "drop":
            assert request.transport is not None
            request.transport.close()  # mid-body, without the chunked terminator
            return response
        await response.write_eof()
        return response

    return behaviour


def answers(status: int, body: Any, headers: dict[str, str] | None = None) -> Behaviour:
    async def behaviour(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        if isinstance(body, bytes | str):
            return web.Response(status=status, body=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return behaviour


def hangs_before_answering() -> Behaviour:
    async def behaviour(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return behaviour


class SimClock:
    """Discrete-event time for several tasks sleeping on one clock.

    ``run`` lets every task go until all of them wait, then moves time to the earliest
    deadline and wakes the tasks due then. With no I/O involved this is deterministic: a
    fixed number of loop turns lets every ready task reach its next wait.
    """

    _TURNS = 100

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), waiter))
        await waiter

    async def run(self, work: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(work)
        while True:
            for _ in range(self._TURNS):
                await asyncio.sleep(0)
            if task.done():
                return task.result()
            if not self._sleepers:
                raise RuntimeError("deadlock: the work waits and nothing sleeps on the clock")
            deadline = self._sleepers[0][0]
            self._now = deadline
            while self._sleepers and self._sleepers[0][0] <= deadline:
                _, _, waiter = heapq.heappop(self._sleepers)
                if not waiter.done():
                    waiter.set_result(None)


async def timed(clock: SimClock, script: Iterable[tuple[float, Any]]) -> AsyncIterator[Any]:
    """A live source: each item at its time on ``clock``."""
    for at, item in script:
        await clock.sleep_until(at)
        yield item
