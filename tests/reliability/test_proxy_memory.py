"""A proxied stream holds a bounded amount of the upstream's reply, however fast it comes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer
from relhelp import assert_openai_error, guarded, parse_sse

from tokenstream.config import Config, ServerConfig, UpstreamConfig
from tokenstream.engine.scheduler import BucketClock

from upstream_support import FakeUpstream, chunk, sse, start_stream

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": True}
Client = TestClient[web.Request, web.Application]


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def proxy(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, upstream: FakeUpstream
) -> Callable[..., Awaitable[Client]]:
    async def make(**upstream_config: Any) -> Client:
        upstream_server = await aiohttp_server(upstream.app())
        config = Config(
            server=ServerConfig(heartbeat_s=0),
            upstream=UpstreamConfig(
                base_url=str(upstream_server.make_url("/v1")),
                profile="chatgpt",  # about 50 tokens/s: far slower than the upstream
                **upstream_config,
            ),
        )
        from tokenstream.server.app import create_app

        return await aiohttp_client(create_app(config, clock=BucketClock(), environ={}))

    return make


async def test_an_endless_fast_upstream_is_held_back_not_buffered(
    proxy: Callable[..., Awaitable[Client]], upstream: FakeUpstream
) -> None:
    written = 0
    piece = sse(chunk(" word" * 50))  # 50 tokens an event

    async def endless(request: web.Request, fake: FakeUpstream) -> web.StreamResponse:
        nonlocal written
        response = await start_stream(request)
        await response.write(sse(chunk(role=True)))
        while True:  # as fast as the proxy takes it, until the proxy closes the connection
            await response.write(piece)
            written += len(piece)

    upstream.behaviour = endless
    client = await proxy()
    rss_before = _rss_bytes()
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200
    await asyncio.sleep(2.0)  # the reader fills its read-ahead, then TCP holds the upstream
    held = written
    rss_growth = _rss_bytes() - rss_before
    response.close()
    await guarded(upstream.closed.wait())
    # read-ahead (4096 tokens) plus the sockets' buffers: a few MB at most. Without the bound
    # (READ_AHEAD_TOKENS set to 10**12) RSS grew by 100 MB in these 2 s.
    assert held < 16 * 1024 * 1024
    assert rss_growth < 64 * 1024 * 1024


async def test_a_line_that_never_ends_ends_the_stream_with_an_error(
    proxy: Callable[..., Awaitable[Client]], upstream: FakeUpstream
) -> None:
    async def endless_line(request: web.Request, fake: FakeUpstream) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(sse(chunk("Hello")) + b"data: ")
        while True:  # one line without an end, until the proxy closes the connection
            await response.write(b"x" * 65536)

    upstream.behaviour = endless_line
    client = await proxy(max_event_chars=1 << 20)
    response = await client.post("/v1/chat/completions", json=CHAT)
    events = parse_sse(await guarded(response.read()))
    assert events[-1].data == "[DONE]"
    error = assert_openai_error(json.loads(events[-2].data), "upstream_bad_event")
    assert "upstream.max_event_chars" in str(error["message"])
    await guarded(upstream.closed.wait())
