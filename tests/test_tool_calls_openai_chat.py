"""Scripted tool calls and reasoning in OpenAI chat completions, judged by the official SDK:
an agent loop "question -> tool call -> tool result -> answer" scripted in one rule file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI
from tool_script import ANSWER, ARGUMENTS, REASONING, RULES, count_tokens, paced_pieces

from tokenstream.config import Config
from tokenstream.engine.clock import FakeClock
from tokenstream.server.app import create_app


@pytest.fixture
async def sdk() -> AsyncIterator[AsyncOpenAI]:
    server = TestServer(create_app(Config.model_validate(RULES), clock=FakeClock()))
    await server.start_server()
    client = AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="anything", max_retries=0)
    yield client
    await client.close()
    await server.close()


QUESTION = [{"role": "user", "content": "What is the weather in Tokyo?"}]


async def test_streamed_tool_calls_and_reasoning_arrive_exactly(sdk: AsyncOpenAI) -> None:
    async with sdk.chat.completions.stream(
        model="tokenstream-1", messages=QUESTION,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ) as stream:
        reasoning = ""
        deltas = 0
        async for event in stream:
            if event.type == "chunk" and event.chunk.choices:
                delta = event.chunk.choices[0].delta
                reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
                deltas += bool(delta.tool_calls)
        completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert reasoning == REASONING
    assert choice.message.content is None
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", json.dumps(ARGUMENTS, ensure_ascii=False)),
        ("get_time", '{"tz":"Asia/Tokyo"}'),
    ]
    assert json.loads(calls[0].function.arguments) == ARGUMENTS  # type: ignore[union-attr]
    assert calls[0].id.startswith("call_") and calls[1].id == "call_time"
    # paced token by token: an arguments delta per token, not one per call
    arguments = [call.function.arguments for call in calls]  # type: ignore[union-attr]
    assert deltas == sum(paced_pieces(text) for text in arguments) + len(calls)  # + the starts
    arguments_tokens = sum(count_tokens(text) for text in arguments)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == count_tokens(REASONING) + arguments_tokens


async def test_the_tool_result_gets_the_answer(sdk: AsyncOpenAI) -> None:
    first = await sdk.chat.completions.create(model="tokenstream-1", messages=QUESTION)  # type: ignore[arg-type]
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert (message.model_extra or {}).get("reasoning_content") == REASONING
    call = (message.tool_calls or [])[0]
    stream = await sdk.chat.completions.create(
        model="tokenstream-1",
        messages=[*QUESTION, message.model_dump(exclude_none=True),  # type: ignore[list-item]
                  {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}],
        stream=True,
    )
    text = ""
    finish = None
    async for chunk in stream:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == ANSWER
    assert finish == "stop"


async def test_a_tool_result_no_rule_answers_gets_the_default_reply(sdk: AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="tokenstream-1",
        messages=[*QUESTION, {"role": "tool", "tool_call_id": "x", "content": "rain"}],  # type: ignore[list-item]
    )
    assert completion.choices[0].message.content == Config().responses.default_reply
