"""Faults on proxied streams: at token N of a real upstream's reply, the fault ends the
stream and the upstream request is cancelled; an error at the start costs the upstream
nothing (it is never asked)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import openai
import pytest
from pytest_aiohttp import AiohttpServer

from tokenstream.config import Config, ServerConfig, UpstreamConfig
from tokenstream.engine.clock import FakeClock
from tokenstream.server.app import create_app

from upstream_support import FakeUpstream, Script, chat_stream, streams

TEXT = [" one", " two", " three", " four", " five", " six"]


@dataclass
class Proxied:
    upstream: FakeUpstream
    client: openai.AsyncOpenAI


@pytest.fixture
async def proxied(
    aiohttp_server: AiohttpServer,
) -> AsyncIterator[Callable[[], Awaitable[Proxied]]]:
    clients: list[openai.AsyncOpenAI] = []

    async def make() -> Proxied:
        upstream = FakeUpstream()
        upstream_server = await aiohttp_server(upstream.app())
        config = Config(
            server=ServerConfig(heartbeat_s=None),
            upstream=UpstreamConfig(base_url=str(upstream_server.make_url("/v1")),
                                    profile="instant"),
        )
        server = await aiohttp_server(create_app(config, clock=FakeClock(), environ={}))
        client = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k",
                                    max_retries=0)
        clients.append(client)
        return Proxied(upstream, client)

    yield make
    for client in clients:
        await client.close()


async def test_a_fault_at_a_token_of_a_live_reply_cancels_the_upstream_request(
    proxied: Callable[[], Awaitable[Proxied]],
) -> None:
    served = await proxied()
    # the upstream sends six tokens, then would go on for ever: only the fault ends it
    events = chat_stream(Script(text=TEXT))[:-3]
    served.upstream.behaviour = streams(*events, then="hang")
    stream = await served.client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "count"}], stream=True,
        extra_body={"tokenstream": {"fault": "truncate@3"}},
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == " one two three"
    await asyncio.wait_for(served.upstream.closed.wait(), 5)  # the upstream was let go


async def test_an_error_at_the_start_never_asks_the_upstream(
    proxied: Callable[[], Awaitable[Proxied]],
) -> None:
    served = await proxied()
    served.upstream.behaviour = streams(*chat_stream(Script(text=TEXT)))
    with pytest.raises(openai.RateLimitError):
        await served.client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "count"}], stream=True,
            extra_body={"tokenstream": {"fault": "error:429@0"}},
        )
    assert served.upstream.seen == []


async def test_an_error_event_mid_reply_of_a_live_stream(
    proxied: Callable[[], Awaitable[Proxied]],
) -> None:
    served = await proxied()
    served.upstream.behaviour = streams(*chat_stream(Script(text=TEXT)))
    stream = await served.client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "count"}], stream=True,
        extra_body={"tokenstream": {"fault": "error:500@2"}},
    )
    text = ""
    with pytest.raises(openai.APIError, match="error:500@2"):
        async for chunk in stream:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert text == " one two"
