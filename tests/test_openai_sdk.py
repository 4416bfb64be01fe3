"""The official OpenAI Python SDK against a real tokenstream server on a free port."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI, BadRequestError

from tokenstream.engine.clock import FakeClock
from tokenstream.server.app import create_app

from support import scripted_reply

EMOJI = scripted_reply("emoji")
HELLO = scripted_reply("hello")


@pytest.fixture
async def sdk() -> AsyncOpenAI:
    server = TestServer(create_app(clock=FakeClock()))
    await server.start_server()
    client = AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="anything", max_retries=0)
    yield client  # type: ignore[misc]
    await client.close()
    await server.close()


async def test_streamed_chat_completion_reassembles_exactly(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="tokenstream-1",
        messages=[{"role": "user", "content": "show me emoji"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    finish = None
    usage = None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == EMOJI
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_not_streamed(sdk: AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="tokenstream-1", messages=[{"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content == HELLO
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None


async def test_extra_body_profile_and_max_tokens(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="tokenstream-1",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        max_tokens=3,
        extra_body={"tokenstream": {"profile": "fast", "seed": 1}},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello! I"
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_bad_request_surfaces_as_sdk_error(sdk: AsyncOpenAI) -> None:
    with pytest.raises(BadRequestError) as caught:
        await sdk.chat.completions.create(
            model="tokenstream-1",
            messages=[{"role": "user", "content": "hello"}],
            extra_body={"tokenstream": {"profile": "warp"}},
        )
    assert "warp" in caught.value.message
