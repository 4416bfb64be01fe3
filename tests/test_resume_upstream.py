"""Resuming a proxied stream (``resume.enabled_upstream: true``): the upstream is asked once;
a connection cut mid-reply and resumed gets the rest of the same reply, byte for byte; a
client that never comes back lets the upstream request go after ``resume.linger_s``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tokenstream.config import Config, ResumeConfig, ServerConfig, UpstreamConfig
from tokenstream.engine.clock import LoopClock
from tokenstream.server.app import create_app

from resume_support import cut
from upstream_support import FakeUpstream, Script, chat_stream, openai_text, parse_sse, streams

TEXT = [f" word{n}" for n in range(40)]
CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "count"}]}

Proxy = Callable[..., Awaitable[tuple[str, FakeUpstream]]]


@pytest.fixture
def proxy(aiohttp_server: Callable[..., Awaitable[Any]]) -> Proxy:
    async def start(
        *, enabled: bool = True, linger_s: float = 30.0, then: str = "end"
    ) -> tuple[str, FakeUpstream]:
        """``then="hang"``: the upstream sends the text and never ends its reply."""
        upstream = FakeUpstream()
        # the text at once: tokenstream re-paces it at 50 tokens/s
        events = chat_stream(Script(text=TEXT))
        upstream.behaviour = streams(
            b"".join(events if then == "end" else events[:-3]), then=then
        )
        upstream_server = await aiohttp_server(upstream.app())
        config = Config(
            server=ServerConfig(heartbeat_s=None),
            upstream=UpstreamConfig(base_url=str(upstream_server.make_url("/v1")),
                                    profile="steady"),
            resume=ResumeConfig(enabled_upstream=enabled, linger_s=linger_s),
        )
        server = await aiohttp_server(create_app(config, clock=LoopClock(), environ={}))
        return str(server.make_url("")).rstrip("/"), upstream

    return start


async def _cut(session: aiohttp.ClientSession, url: str) -> tuple[str, bytes]:
    """The chat stream at ``url``, reset by the server after 0.3 s: its id, the events."""
    headers = {"X-Tokenstream-Fault": "reset@0.3s"}
    return await cut(session, "POST", url, json=CHAT, headers=headers)


async def test_a_cut_proxied_stream_resumes_and_the_upstream_is_asked_once(
    proxy: Proxy,
) -> None:
    base, upstream = await proxy()
    async with aiohttp.ClientSession() as session:
        stream_id, before = await _cut(session, base + "/v1/chat/completions")
        assert before
        last = parse_sse(before)[-1].id
        async with session.get(f"{base}/v1/streams/{stream_id}",
                               headers={"Last-Event-ID": last or ""}) as response:
            assert response.status == 200
            rest = await response.read()
    events = parse_sse(before + rest)
    assert [e.id for e in events] == [f"{stream_id}:{n}" for n in range(1, len(events) + 1)]
    assert openai_text(events) == "".join(TEXT)
    assert events[-1].data == "[DONE]"
    assert len(upstream.seen) == 1  # a paid request is never sent twice


async def test_without_a_reconnect_the_upstream_request_goes_after_the_linger(
    proxy: Proxy,
) -> None:
    base, upstream = await proxy(linger_s=0.5, then="hang")
    async with aiohttp.ClientSession() as session:
        await _cut(session, base + "/v1/chat/completions")
    loop = asyncio.get_running_loop()
    left = loop.time()
    await asyncio.wait_for(upstream.closed.wait(), 5)
    assert upstream.closed_at is not None and upstream.closed_at - left >= 0.4  # it lingered
    assert len(upstream.seen) == 1


async def test_when_upstream_resume_is_off_a_reconnect_gets_204_and_nothing_is_asked_again(
    proxy: Proxy,
) -> None:
    base, upstream = await proxy(enabled=False, then="hang")
    async with aiohttp.ClientSession() as session:
        async with session.post(base + "/v1/chat/completions", json=CHAT) as response:
            stream_id = response.headers["X-Tokenstream-Stream-Id"]
            first = await response.content.readuntil(b"\n\n")
        last = parse_sse(first)[-1].id
        await asyncio.wait_for(upstream.closed.wait(), 5)  # cancelled when the client left
        async with session.get(f"{base}/v1/streams/{stream_id}",
                               headers={"Last-Event-ID": last or ""}) as response:
            assert response.status == 204
    assert len(upstream.seen) == 1
