"""Heartbeats: ``: ping`` comments through long silences, never data to any client."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from pytest_aiohttp import AiohttpClient
from relhelp import FAST, make_app, parse_sse

from tokenstream.engine.clock import FakeClock

from support import scripted_reply

HELLO_REPLY = scripted_reply("hello")
PING = b": ping\n"  # a lone comment line: no blank line to dispatch an empty event


@pytest.mark.parametrize(("heartbeat_s", "pings"), [(15, 3), (10, 5), (59, 1), (0, 0), (None, 0)])
async def test_pings_fill_a_long_time_to_first_token(
    aiohttp_client: AiohttpClient, heartbeat_s: float | None, pings: int
) -> None:
    clock = FakeClock()
    app = make_app(
        {"heartbeat_s": heartbeat_s},
        clock=clock,
        profiles={"thinker": {**FAST, "ttft_ms": 60_000}},
        default_profile="thinker",
    )
    client = await aiohttp_client(app)
    body = await (await client.get("/v1/stream", params={"prompt": "hello"})).read()
    assert body.count(PING) == pings
    assert body.startswith(PING if pings else b"id: ")
    events = parse_sse(body)
    assert "".join(e.data for e in events[:-1]) == HELLO_REPLY
    assert all(e.data.strip() != "ping" for e in events)
    # each ping went out when the silence reached the interval: the clock saw it
    if heartbeat_s:
        expected = [heartbeat_s * n for n in range(1, pings + 1)] + [60.0]
        assert [s for s in clock.sleeps if s <= 60.0][: pings + 1] == pytest.approx(expected)


async def test_openai_sdk_sees_no_heartbeat_as_a_chunk(aiohttp_client: AiohttpClient) -> None:
    """A ping between every token; the SDK still yields exactly the content chunks."""
    app = make_app(
        {"heartbeat_s": 15, "max_stream_duration_s": 0},  # ~15 min of (fake) time
        clock=FakeClock(),
        profiles={"glacial": {**FAST, "tokens_per_second": 0.05, "ttft_ms": 20_000}},
        default_profile="glacial",
    )
    client = await aiohttp_client(app)
    raw = await (await client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": True,
    })).read()
    data_events = [e for e in parse_sse(raw) if e.data != "[DONE]"]
    assert raw.count(PING) >= len(data_events) - 2  # a ping in (nearly) every 20 s gap

    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="any", max_retries=0)
    stream = await sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    await sdk.close()
    assert len(chunks) == len(data_events)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == HELLO_REPLY
    assert len({c.id for c in chunks}) == 1
    assert len({json.loads(e.data)["id"] for e in data_events}) == 1


async def test_the_sdks_read_ids_and_heartbeats_between_events(
    aiohttp_client: AiohttpClient,
) -> None:
    """Every event has an ``id:``; a heartbeat after one is no event to openai-python (chat
    and Responses) or anthropic-python, whose decoders keep the last id across events."""
    app = make_app(
        {"heartbeat_s": 15, "max_stream_duration_s": 0},
        clock=FakeClock(),
        profiles={"glacial": {**FAST, "tokens_per_second": 0.05, "ttft_ms": 20_000}},
        default_profile="glacial",
    )
    client = await aiohttp_client(app)
    messages = [{"role": "user", "content": "hello"}]
    raw = await (await client.post("/v1/messages", json={
        "model": "m", "max_tokens": 100, "messages": messages, "stream": True,
    })).read()
    assert raw.count(b"\nid: ") + raw.startswith(b"id: ") >= 3 and raw.count(PING) >= 3
    base = str(client.make_url(""))
    claude = anthropic.AsyncAnthropic(base_url=base, api_key="any", max_retries=0)
    async with claude.messages.stream(model="m", max_tokens=100, messages=messages) as stream:
        assert await stream.get_final_text() == HELLO_REPLY
    await claude.close()
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="any", max_retries=0)
    events = [event async for event in await sdk.responses.create(
        model="m", input="hello", stream=True
    )]
    await sdk.close()
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == HELLO_REPLY
