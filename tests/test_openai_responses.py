"""The official OpenAI Python SDK's Responses API against tokenstream: ``POST /v1/responses``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from tokenstream.engine.clock import FakeClock
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.server.app import create_app

from support import scripted_reply

HELLO = scripted_reply("hello")
# Chinese, ZWJ emoji, leading spaces, CRLF and a lone CR: echoed back byte for byte
TRICKY = "  你好，世界！👩‍👩‍👧‍👦 🇯🇵\r\nline two\rend 我懒得写"


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    server = TestServer(create_app(clock=FakeClock(), environ={}))
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def sdk(server: TestServer) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="anything", max_retries=0)
    yield client
    await client.close()


def _tokens(text: str) -> int:
    return Tokenizer(load_encoding()).count(text)


async def test_a_streamed_response_reassembles_exactly_in_order(sdk: AsyncOpenAI) -> None:
    stream = await sdk.responses.create(
        model="tokenstream-1",
        input=TRICKY,
        instructions="Repeat.",
        stream=True,
        extra_body={"tokenstream": {"source": "echo"}},
    )
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == TRICKY and len(deltas) > 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == TRICKY
    assert completed.usage is not None
    assert completed.usage.output_tokens == _tokens(TRICKY)


async def test_the_stream_helper_gives_the_final_response(sdk: AsyncOpenAI) -> None:
    async with sdk.responses.stream(model="tokenstream-1", input="hello") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == HELLO
    assert final.status == "completed"


async def test_max_output_tokens_makes_it_incomplete(sdk: AsyncOpenAI) -> None:
    stream = await sdk.responses.create(
        model="tokenstream-1", input="hello", max_output_tokens=5, stream=True
    )
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None  # type: ignore[union-attr]
    assert last.response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]
    assert last.response.usage.output_tokens == 5  # type: ignore[union-attr]
    assert HELLO.startswith(last.response.output_text)  # type: ignore[union-attr]


async def test_a_whole_response_with_input_items(sdk: AsyncOpenAI) -> None:
    response = await sdk.responses.create(
        model="tokenstream-1",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hello"}]}],
    )
    assert response.output_text == HELLO
    assert response.status == "completed"
    assert response.usage is not None and response.usage.output_tokens == _tokens(HELLO)


async def test_input_with_a_function_call_and_its_output_is_answered(sdk: AsyncOpenAI) -> None:
    response = await sdk.responses.create(
        model="tokenstream-1",
        input=[
            {"role": "user", "content": "weather in Tokyo?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": '{"city":"Tokyo"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ],
    )
    assert response.status == "completed" and response.output


async def test_a_bad_request_is_a_400_naming_the_parameter(server: TestServer) -> None:
    async with aiohttp.ClientSession() as session, session.post(
        server.make_url("/v1/responses"), json={"model": "m", "input": "x", "warp": 1}
    ) as response:
        body = await response.json()
    assert response.status == 400
    assert body["error"]["code"] == "unknown_parameter" and body["error"]["param"] == "warp"
