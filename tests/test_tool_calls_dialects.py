"""Scripted tool calls and reasoning in the Responses and Anthropic dialects, judged by the
official SDKs against a real server: the agent loop of ``test_tool_calls_openai_chat``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from tool_script import ANSWER, ARGUMENTS, REASONING, RULES, count_tokens

from tokenstream.config import Config
from tokenstream.engine.clock import FakeClock
from tokenstream.server.app import create_app

QUESTION = "What is the weather in Tokyo?"
TIME_ARGUMENTS = '{"tz":"Asia/Tokyo"}'
WEATHER_ARGUMENTS = json.dumps(ARGUMENTS, ensure_ascii=False)  # as a YAML mapping streams


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    server = TestServer(create_app(Config.model_validate(RULES), clock=FakeClock(), environ={}))
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_responses_stream_a_reasoning_item_and_function_calls(base_url: str) -> None:
    client = AsyncOpenAI(base_url=base_url + "/v1", api_key="anything", max_retries=0)
    async with client.responses.stream(model="tokenstream-1", input=QUESTION) as stream:
        argument_deltas = 0
        async for event in stream:
            argument_deltas += event.type == "response.function_call_arguments.delta"
        response = await stream.get_final_response()
    await client.close()
    reasoning, *calls = response.output
    assert reasoning.type == "reasoning"
    assert "".join(part.text for part in reasoning.summary) == REASONING
    assert [(c.type, c.name, c.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("function_call", "get_weather", json.dumps(ARGUMENTS, ensure_ascii=False)),
        ("function_call", "get_time", TIME_ARGUMENTS),
    ]
    assert calls[1].call_id == "call_time"  # type: ignore[union-attr]
    assert argument_deltas > 10  # paced token by token
    assert response.status == "completed"
    assert response.usage is not None
    arguments_tokens = count_tokens(WEATHER_ARGUMENTS) + count_tokens(TIME_ARGUMENTS)
    assert response.usage.output_tokens == count_tokens(REASONING) + arguments_tokens


async def test_responses_answer_a_function_call_output(base_url: str) -> None:
    client = AsyncOpenAI(base_url=base_url + "/v1", api_key="anything", max_retries=0)
    first = await client.responses.create(model="tokenstream-1", input=QUESTION)
    call = next(item for item in first.output if item.type == "function_call")
    second = await client.responses.create(
        model="tokenstream-1",
        input=[
            {"role": "user", "content": QUESTION},
            *[item.model_dump(exclude_none=True) for item in first.output],  # type: ignore[misc]
            {"type": "function_call_output", "call_id": call.call_id,  # type: ignore[union-attr]
             "output": '{"sky": "sunny"}'},
        ],
    )
    await client.close()
    assert second.output_text == ANSWER
    assert second.status == "completed"


async def test_anthropic_streams_thinking_and_tool_use_blocks(base_url: str) -> None:
    client = AsyncAnthropic(base_url=base_url, api_key="anything", max_retries=0)
    async with client.messages.stream(
        model="tokenstream-1", max_tokens=4096, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        json_deltas = 0
        async for event in stream:
            json_deltas += event.type == "input_json"
        message = await stream.get_final_message()
    await client.close()
    thinking, weather, time = message.content
    assert thinking.type == "thinking" and thinking.thinking == REASONING
    assert weather.type == "tool_use" and weather.name == "get_weather"
    assert weather.input == ARGUMENTS
    assert time.type == "tool_use" and time.id == "call_time"
    assert time.input == json.loads(TIME_ARGUMENTS)
    assert message.stop_reason == "tool_use"
    assert json_deltas > 10
    arguments_tokens = count_tokens(WEATHER_ARGUMENTS) + count_tokens(TIME_ARGUMENTS)
    assert message.usage.output_tokens == count_tokens(REASONING) + arguments_tokens


async def test_anthropic_whole_reply_has_the_blocks_then_answers_the_result(base_url: str) -> None:
    client = AsyncAnthropic(base_url=base_url, api_key="anything", max_retries=0)
    question = {"role": "user", "content": QUESTION}
    first = await client.messages.create(model="tokenstream-1", max_tokens=4096,
                                         messages=[question])
    assert first.stop_reason == "tool_use"
    thinking, weather, time = first.content  # the streamed blocks, whole
    assert thinking.type == "thinking" and thinking.thinking == REASONING
    assert weather.type == "tool_use" and weather.input == ARGUMENTS
    assert time.type == "tool_use" and time.input == json.loads(TIME_ARGUMENTS)
    assert first.usage.output_tokens == (
        count_tokens(REASONING) + count_tokens(WEATHER_ARGUMENTS) + count_tokens(TIME_ARGUMENTS))
    results = [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny, 21 °C"}
               for block in first.content if block.type == "tool_use"]
    second = await client.messages.create(
        model="tokenstream-1", max_tokens=4096,
        messages=[question, {"role": "assistant", "content": first.content},  # type: ignore[list-item]
                  {"role": "user", "content": results}],  # type: ignore[typeddict-item]
    )
    await client.close()
    assert [block.type for block in second.content] == ["text"]
    assert second.content[0].text == ANSWER  # type: ignore[union-attr]
    assert second.stop_reason == "end_turn"
