"""A proxy that costs the upstream nothing it should not (limits before the request, the time
limit by the clock, hostile bodies refused, reconnects not re-billed), and clients that leave
early counted as what they are."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer
from relhelp import (
    FAST,
    assert_openai_error,
    get_request,
    guarded,
    make_app,
    parse_sse,
    raw_connect,
    reset,
    running,
)

from tokenstream.config import Config, ServerConfig, UpstreamConfig
from tokenstream.engine.clock import FakeClock
from tokenstream.server.accesslog import ACCESS_LOGGER
from tokenstream.server.app import STATE, create_app

from support import wait_for
from upstream_support import (
    FakeUpstream,
    answers,
    chunk,
    openai_text,
    reply_stream,
    sse,
    start_stream,
    streams,
)

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": True}

Client = TestClient[web.Request, web.Application]
MakeProxy = Callable[..., Awaitable[Client]]


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def proxy(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, upstream: FakeUpstream
) -> MakeProxy:
    async def make(**server: Any) -> Client:
        upstream_server = await aiohttp_server(upstream.app())
        config = Config(
            server=ServerConfig(**{"heartbeat_s": 0, **server}),
            upstream=UpstreamConfig(
                base_url=str(upstream_server.make_url("/v1")), profile="instant"
            ),
        )
        return await aiohttp_client(create_app(config, clock=FakeClock(), environ={}))

    return make


def _held_open(gate: asyncio.Event) -> Any:
    """An upstream that answers 200 and sends nothing until ``gate`` is set."""
    return streams(sse(chunk(role=True)), gate=gate)


async def test_streams_beyond_the_limit_are_refused_before_anything_goes_upstream(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    gate = asyncio.Event()
    upstream.behaviour = _held_open(gate)
    client = await proxy(max_concurrent_streams=2, retry_after_s=3)
    requests = [asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
                for _ in range(10)]
    refused = []
    for request in asyncio.as_completed(requests[:]):
        response = await guarded(request)
        if response.status == 429:
            refused.append(response)
        if len(refused) == 8:
            break
    assert len(refused) == 8
    assert all(r.headers["Retry-After"] == "3" for r in refused)
    assert_openai_error(await refused[0].json(), "rate_limit_exceeded")
    assert len(upstream.seen) == 2  # the refused ones were never sent upstream
    gate.set()
    for request in requests:
        response = await guarded(request)
        await response.read()
    assert len(upstream.seen) == 2


async def test_shutdown_answers_a_request_still_waiting_for_the_upstream_at_once(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    async def slow(request: web.Request, fake: FakeUpstream) -> web.StreamResponse:
        await asyncio.sleep(3600)  # a model that takes its time: cancelled below
        raise AssertionError("unreachable")

    upstream.behaviour = slow
    client = await proxy()
    waiting = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
    await wait_for(lambda: len(upstream.seen) == 1)
    stopped = await guarded(client.app[STATE].streams.shutdown(grace_s=0, final_timeout_s=5))
    assert stopped == 1
    response = await guarded(waiting)
    assert response.status == 503
    assert_openai_error(await response.json(), "server_shutting_down")
    await guarded(upstream.closed.wait())  # the upstream request went away with it


@pytest.mark.parametrize("silence", ["comments", "tool_call_deltas"])
async def test_the_time_limit_holds_while_the_upstream_sends_no_text(
    proxy: MakeProxy, upstream: FakeUpstream, silence: str
) -> None:
    async def no_text(request: web.Request, fake: FakeUpstream) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(sse(chunk(role=True)))
        start = {"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                 "function": {"name": "f", "arguments": ""}}]}
        await response.write(sse(chunk(delta=start)))
        while True:  # until the proxy closes the connection
            if silence == "comments":
                await response.write(b": keep-alive\n\n")
            else:
                args = {"tool_calls": [{"index": 0, "function": {"arguments": " "}}]}
                await response.write(sse(chunk(delta=args)))
            await asyncio.sleep(0.02)

    upstream.behaviour = no_text
    client = await proxy(max_stream_duration_s=0.3)
    response = await client.post("/v1/chat/completions", json=CHAT)
    events = parse_sse(await guarded(response.read()))
    assert events[-1].data == "[DONE]"
    error = assert_openai_error(json.loads(events[-2].data), "stream_duration_exceeded")
    assert "server.max_stream_duration_s" in str(error["message"])
    await guarded(upstream.closed.wait())


async def test_json_nested_too_deeply_is_a_400_in_proxy_mode(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    client = await proxy()
    body = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await client.post(
        "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert_openai_error(await response.json(), "invalid_json")
    assert upstream.seen == []


async def test_a_proxied_eventsource_reconnect_is_told_to_stop_not_billed_again(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = streams(reply_stream(["Hello", " there"]))
    client = await proxy()
    params = {"prompt": "hi", "model": "m"}
    first = await client.get("/v1/stream", params=params)
    body = await first.read()
    assert first.status == 200, body
    last = parse_sse(body)[-1].id
    assert len(upstream.seen) == 1
    # the reconnect after the end, or mid-reply: an upstream reply is not resumable by default
    response = await client.get("/v1/stream", params=params, headers={"Last-Event-ID": last})
    assert response.status == 204
    # an id that names no stream of this server: 404, which stops an EventSource as well
    response = await client.get("/v1/stream", params=params, headers={"Last-Event-ID": "7"})
    assert response.status == 404
    assert len(upstream.seen) == 1


@pytest.mark.parametrize("leave", ["fin", "rst"])
async def test_clients_that_leave_right_after_asking_are_disconnects_not_errors(
    caplog: pytest.LogCaptureFixture, leave: str
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(profiles={"slow": {**FAST, "tokens_per_second": 5}}, default_profile="slow")
    async with running(app) as (_, port, _runner):
        for _ in range(50):
            sock = await raw_connect(port)
            await asyncio.get_running_loop().sock_sendall(
                sock, get_request("/v1/stream?prompt=hello")
            )
            if leave == "rst":
                reset(sock)
            else:
                sock.close()
        stats = app[STATE].stats
        await wait_for(lambda: stats.started == stats.disconnected + stats.failed
                       and stats.active == 0)
        assert stats.started > 0  # (a client gone before its request was read starts none)
        assert stats.failed == 0
        assert stats.disconnected == stats.started
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    access = [r.access for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]
    assert all(line["outcome"] != "failed" for line in access)


def _answers_after(seconds: float, behaviour: Any) -> Any:
    async def late(request: web.Request, fake: FakeUpstream) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await behaviour(request, fake)  # type: ignore[no-any-return]

    return late


async def test_pings_keep_the_connection_while_the_upstream_takes_its_time(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = _answers_after(0.5, streams(reply_stream(["Hello", " there"])))
    client = await proxy(heartbeat_s=0.1)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200  # before the upstream answered
    raw = await guarded(response.read())
    assert raw.startswith(b": ping\n")
    assert raw.count(b": ping\n") >= 2
    assert openai_text(parse_sse(raw)) == "Hello there"


async def test_a_late_refusal_after_the_pings_is_an_error_event(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    refusal = {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rl"}}
    upstream.behaviour = _answers_after(0.5, answers(429, refusal))
    client = await proxy(heartbeat_s=0.1)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200
    raw = await guarded(response.read())
    events = parse_sse(raw)
    assert raw.startswith(b": ping\n") and events[-1].data == "[DONE]"
    error = assert_openai_error(json.loads(events[-2].data), "rl")
    assert error["message"] == "slow down" and error["type"] == "rate_limit_error"
    assert client.app[STATE].stats.failed == 1


async def test_a_prompt_refusal_is_still_its_http_status(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    refusal = {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rl"}}
    upstream.behaviour = answers(429, refusal, {"Retry-After": "2"})
    client = await proxy(heartbeat_s=5)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 429 and response.headers["Retry-After"] == "2"


async def test_leaving_while_the_upstream_takes_its_time_drops_the_request(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = _answers_after(3600, streams(reply_stream(["never"])))
    client = await proxy(heartbeat_s=0.05)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert await guarded(response.content.readuntil(b"\n")) == b": ping\n"
    response.close()
    await guarded(upstream.closed.wait())
    assert upstream.cancelled
    await wait_for(lambda: client.app[STATE].stats.active == 0)


async def test_a_whole_proxied_reply_counts_toward_the_limit_too(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    gate = asyncio.Event()

    async def held(request: web.Request, fake: FakeUpstream) -> web.StreamResponse:
        await gate.wait()
        return await answers(200, {"object": "chat.completion", "choices": []})(request, fake)

    upstream.behaviour = held
    client = await proxy(max_concurrent_streams=1)
    whole = {**CHAT, "stream": False}
    first = asyncio.ensure_future(client.post("/v1/chat/completions", json=whole))
    await wait_for(lambda: len(upstream.seen) == 1)
    second = await client.post("/v1/chat/completions", json=whole)
    assert second.status == 429
    assert len(upstream.seen) == 1  # refused before it was sent
    gate.set()
    assert (await guarded(first)).status == 200
