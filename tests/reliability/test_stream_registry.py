"""The shutdown sequence in process: grace, then a final event; 503 for what comes later."""

from __future__ import annotations

import asyncio
import json

import pytest
from pytest_aiohttp import AiohttpClient
from relhelp import assert_openai_error, guarded, held_app, parse_sse

from tokenstream.engine.registry import StreamRegistry
from tokenstream.server.app import STATE

from support import wait_for

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_streams_running_after_the_grace_get_a_final_event(
    aiohttp_client: AiohttpClient,
) -> None:
    app, clock = held_app()
    client = await aiohttp_client(app)
    streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await wait_for(lambda: clock.sleepers == 1)  # mid-reply, waiting for its next event

    stopped = await guarded(app[STATE].streams.shutdown(grace_s=0, final_timeout_s=5))
    assert stopped == 1
    events = parse_sse(await streamed.read())
    assert events[-1].data == "[DONE]"
    assert_openai_error(json.loads(events[-2].data), "server_shutting_down")
    assert clock.sleepers == 0  # its timer was cancelled, not left waiting

    later = await client.get("/v1/stream", params={"prompt": "x"})
    assert later.status == 503
    assert later.headers["Retry-After"] == "1"
    assert_openai_error(await later.json(), "server_shutting_down")


async def test_a_waiting_completion_is_answered_503_at_shutdown(
    aiohttp_client: AiohttpClient,
) -> None:
    app, clock = held_app()
    client = await aiohttp_client(app)
    request = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
    await wait_for(lambda: clock.sleepers == 1)  # waiting for the reply's end
    await guarded(app[STATE].streams.shutdown(grace_s=0, final_timeout_s=5))
    response = await guarded(request)
    assert response.status == 503
    assert_openai_error(await response.json(), "server_shutting_down")


async def test_streams_that_end_within_the_grace_are_not_stopped(
    aiohttp_client: AiohttpClient,
) -> None:
    app, clock = held_app()
    client = await aiohttp_client(app)
    streamed = await client.get("/v1/stream", params={"prompt": "x", "format": "json"})
    await wait_for(lambda: clock.sleepers == 1)
    shutdown = asyncio.ensure_future(app[STATE].streams.shutdown(grace_s=3600, final_timeout_s=5))
    await asyncio.sleep(0)
    assert not shutdown.done()
    clock.advance(3600)  # the reply plays to its end within the grace
    assert await guarded(shutdown) == 0
    events = parse_sse(await streamed.read())
    assert events[-1].data == "[DONE]"
    assert all("error" not in json.loads(e.data) for e in events[:-1])


async def test_hurry_ends_the_grace_at_once() -> None:
    registry = StreamRegistry(None, 1)
    task = asyncio.ensure_future(asyncio.Event().wait())
    control = registry.open()
    control.task = task  # a stand-in stream task that waits forever
    with control.interruptible():
        shutdown = asyncio.ensure_future(registry.shutdown(grace_s=3600, final_timeout_s=0))
        await asyncio.sleep(0)
        registry.hurry()
        await guarded(shutdown)
    with pytest.raises(asyncio.CancelledError):
        await guarded(task)
    registry.close(control)
    assert len(registry) == 0


async def test_a_stop_reports_its_first_reason_once() -> None:
    """The time limit and shutdown stop a stream the same way; the runner is told which."""
    registry = StreamRegistry(None, 1)
    task = asyncio.ensure_future(asyncio.Event().wait())
    control = registry.open()
    control.task = task
    with control.interruptible():
        control.stop("time_limit")
        control.stop("shutdown")  # too late: the stream is already ending
    with pytest.raises(asyncio.CancelledError):
        await guarded(task)
    assert control.consume_stop() == "time_limit"
    assert control.consume_stop() is None  # a second cancellation would not be ours
    registry.close(control)
