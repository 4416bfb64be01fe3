"""The official Anthropic Python SDK against a real tokenstream server: ``POST /v1/messages``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from anthropic import AsyncAnthropic, AuthenticationError, BadRequestError

from tokenstream.config import Config
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.server.app import create_app

from support import scripted_reply

EMOJI = scripted_reply("emoji")
HELLO = scripted_reply("hello")
# Chinese, ZWJ emoji, leading spaces, CRLF and a lone CR: echoed back byte for byte
TRICKY = "  你好，世界！👩‍👩‍👧‍👦 🇯🇵\r\nline two\rend 我懒得写"


async def _server(config: Config | None = None) -> TestServer:
    server = TestServer(create_app(config, clock=FakeClock(), environ={}))
    await server.start_server()
    return server


@pytest.fixture
async def sdk() -> AsyncIterator[AsyncAnthropic]:
    server = await _server()
    client = AsyncAnthropic(base_url=str(server.make_url("")), api_key="anything", max_retries=0)
    yield client
    await client.close()
    await server.close()


def _tokens(text: str) -> int:
    return Tokenizer(load_encoding()).count(text)


@pytest.mark.parametrize(("prompt", "reply"), [("show me emoji", EMOJI), ("hello", HELLO)])
async def test_a_streamed_message_reassembles_exactly(
    sdk: AsyncAnthropic, prompt: str, reply: str
) -> None:
    async with sdk.messages.stream(
        model="tokenstream-1", max_tokens=4096, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        deltas = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(deltas) == reply
    assert len(deltas) > 1  # token by token
    assert final.content[0].type == "text" and final.content[0].text == reply
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == _tokens(reply)
    assert final.usage.input_tokens > 0


async def test_echo_is_byte_exact_with_a_system_prompt(sdk: AsyncAnthropic) -> None:
    async with sdk.messages.stream(
        model="tokenstream-1",
        max_tokens=4096,
        system="You are terse.",
        messages=[{"role": "user", "content": TRICKY}],
        extra_body={"tokenstream": {"source": "echo"}},
    ) as stream:
        text = await stream.get_final_text()
    assert text == TRICKY


async def test_max_tokens_ends_with_stop_reason_max_tokens(sdk: AsyncAnthropic) -> None:
    async with sdk.messages.stream(
        model="tokenstream-1", max_tokens=5, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 5
    assert HELLO.startswith(final.content[0].text)  # type: ignore[union-attr]


async def test_a_whole_message(sdk: AsyncAnthropic) -> None:
    message = await sdk.messages.create(
        model="tokenstream-1", max_tokens=4096, messages=[{"role": "user", "content": "hello"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == HELLO  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == _tokens(HELLO)


async def test_a_conversation_with_tool_use_and_tool_result_is_answered(
    sdk: AsyncAnthropic,
) -> None:
    async with sdk.messages.stream(
        model="tokenstream-1",
        max_tokens=4096,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": "weather in Tokyo?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Tokyo"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            ]},
        ],
    ) as stream:
        final = await stream.get_final_message()
    assert final.content and final.stop_reason in ("end_turn", "tool_use")


async def test_errors_come_in_anthropics_shape(sdk: AsyncAnthropic) -> None:
    with pytest.raises(BadRequestError) as refused:
        await sdk.messages.create(
            model="tokenstream-1", max_tokens=0, messages=[{"role": "user", "content": "hi"}]
        )
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


async def test_max_tokens_is_required_as_anthropic_requires_it() -> None:
    server = await _server()
    try:
        async with aiohttp.ClientSession() as session, session.post(
            server.make_url("/v1/messages"),
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        ) as response:
            body = await response.json()
        assert response.status == 400
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in body["error"]["message"]
    finally:
        await server.close()


async def test_the_api_key_may_come_as_x_api_key() -> None:
    server = await _server(Config.model_validate({"server": {"api_keys": ["sk-ant-test-123456"]}}))
    try:
        good = AsyncAnthropic(base_url=str(server.make_url("")), api_key="sk-ant-test-123456",
                              max_retries=0)
        message = await good.messages.create(
            model="tokenstream-1", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content
        bad = AsyncAnthropic(base_url=str(server.make_url("")), api_key="sk-ant-wrong-000000",
                             max_retries=0)
        with pytest.raises(AuthenticationError) as refused:
            await bad.messages.create(
                model="tokenstream-1", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            )
        assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        await good.close()
        await bad.close()
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{nope", 400),
        (b'{"model": "m", "max_tokens": 5, "messages": [], "warp": 1}', 400),
        (b'{"model": "m", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}', 400),
        (b'{"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}', 400),
        (b'{"model": "m", "max_tokens": 1e400, "messages": []}', 400),
    ],
)
async def test_bad_bodies_get_a_4xx_in_anthropics_shape(body: bytes, status: int) -> None:
    server = await _server()
    try:
        async with aiohttp.ClientSession() as session, session.post(
            server.make_url("/v1/messages"),
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response:
            answer = await response.json()
        assert response.status == status
        assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
        assert answer["error"]["message"]
    finally:
        await server.close()
