"""Every client dialect in front of every upstream dialect (``upstream.dialect``), end to end
over HTTP, judged by the official SDKs: ``openai`` (chat completions, ``responses``) and
``anthropic`` (``messages``).

The fake upstream streams one reply (reasoning, Chinese and emoji text split across events,
a tool call) in its own API, cut into bursts of bytes; tokenstream decodes it, re-paces it
and encodes it in the client's API. Pacing runs on a FakeClock (instant).

The AI SDK UI dialect (``POST /api/chat``) is read by the SDK itself on Node 22
(``tests/node/ui_chat.mjs``, the transport ``useChat`` uses), in the streamed tests
(``STREAMED_CLIENTS``); it has no whole answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from node_support import node_binary, run_node
from pytest_aiohttp import AiohttpServer

from tokenstream.config import Config, ServerConfig, UpstreamConfig
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.reply import count_prompt_tokens
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.server.app import STATE, create_app
from tokenstream.sources.upstream.wire import ANTHROPIC_VERSION
from tokenstream.sources.upstream_bodies import ANTHROPIC_MAX_TOKENS

from upstream_support import (
    DIALECT_STREAMS,
    UPSTREAM_MODEL,
    FakeUpstream,
    Script,
    answers,
    bursts,
    error_answer,
    parse_sse,
    streams,
)

KEY = "sk-test-upstream-0123456789-SECRET"
KEY_ENV = "TOKENSTREAM_TEST_UPSTREAM_KEY"
UPSTREAMS = ["openai-chat", "openai-responses", "anthropic"]
CLIENTS = ["chat", "responses", "messages"]
CLIENT_DIALECT = {"chat": "openai-chat", "responses": "openai-responses", "messages": "anthropic"}

# Chinese, emoji (skin tone, ZWJ family, flag) split inside their sequences, CRLF split
TEXT = ["你好，", "世界！Hi 👋", "🏽 family: 👩‍", "👩‍👧‍👦 🇯", "🇵\r\nline two\r", "\nend 我懒得写"]
REPLY = "".join(TEXT)
REASONING = ["Let", " me", " think", " about", " it."]
CALL = ("call_abc", "get_weather", ['{"', "city", '": "Pa', 'ris"}'])
ARGUMENTS = "".join(CALL[2])
FULL = Script(text=TEXT, reasoning=REASONING, call=CALL, finish="tool_calls")
PROMPT = "What is the weather in Paris?"


@dataclass
class Got:
    """What a client made of the reply, through its SDK."""

    text: str = ""
    text_deltas: int = 0
    reasoning: str = ""
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    """``(call_id, name, arguments)``."""
    finish: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class Proxy:
    upstream: FakeUpstream
    server: TestServer
    app: web.Application

    def url(self, path: str = "") -> str:
        return str(self.server.make_url(path))


MakeProxy = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def proxy(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeProxy]:
    monkeypatch.setenv(KEY_ENV, KEY)

    async def make(dialect: str, **upstream_fields: Any) -> Proxy:
        upstream = FakeUpstream()
        upstream_server = await aiohttp_server(upstream.app())
        fields = {
            "base_url": str(upstream_server.make_url("/v1")), "api_key_env": KEY_ENV,
            "profile": "instant", "dialect": dialect, **upstream_fields,
        }
        config = Config(server=ServerConfig(heartbeat_s=None), upstream=UpstreamConfig(**fields))
        app = create_app(config, clock=FakeClock(), environ={})
        return Proxy(upstream, await aiohttp_server(app), app)

    yield make


# -- the clients ---------------------------------------------------------------------------


def _openai(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.url("/v1"), api_key="client-key", max_retries=0)


def _anthropic(proxy: Proxy) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.url(""), api_key="client-key", max_retries=0)


async def _chat(proxy: Proxy, extra: dict[str, Any]) -> Got:
    got = Got()
    calls: dict[int, list[str]] = {}
    async with _openai(proxy) as client:
        stream = await client.chat.completions.create(
            model="client-model", messages=[{"role": "user", "content": PROMPT}], stream=True,
            stream_options={"include_usage": True}, extra_body=extra,
        )
        async for chunk in stream:
            if chunk.usage is not None:
                got.prompt_tokens = chunk.usage.prompt_tokens
                got.completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    got.text += delta.content
                    got.text_deltas += 1
                got.reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
                for call in delta.tool_calls or ():
                    entry = calls.setdefault(call.index, ["", "", ""])
                    entry[0] += call.id or ""
                    entry[1] += (call.function and call.function.name) or ""
                    entry[2] += (call.function and call.function.arguments) or ""
                got.finish = choice.finish_reason or got.finish
    got.calls = [(c[0], c[1], c[2]) for _, c in sorted(calls.items())]
    return got


async def _responses(proxy: Proxy, extra: dict[str, Any]) -> Got:
    got = Got()
    async with _openai(proxy) as client, client.responses.stream(
        model="client-model", input=PROMPT, extra_body=extra
    ) as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                got.text_deltas += 1
            elif event.type in (
                "response.reasoning_summary_text.delta", "response.reasoning_text.delta"
            ):
                got.reasoning += event.delta
            elif event.type in ("response.completed", "response.incomplete"):
                final = event.response  # (get_final_response wants response.completed)
    got.text = final.output_text
    got.calls = [(item.call_id, item.name, item.arguments)
                 for item in final.output if item.type == "function_call"]
    got.finish = final.status
    assert final.usage is not None
    got.prompt_tokens = final.usage.input_tokens
    got.completion_tokens = final.usage.output_tokens
    return got


async def _ui(proxy: Proxy, extra: dict[str, Any]) -> Got:
    """The AI SDK's chat transport (what ``useChat`` runs) reads ``/api/chat``."""
    result = await run_node(node_binary(), "ui_chat.mjs", {
        "mode": "transport", "api": proxy.url("/api/chat"),
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": PROMPT}]}],
        "body": {"model": "client-model", **extra},
    })
    assert result["streamErrors"] == [], result
    got = Got()
    for chunk in result["chunks"]:
        if chunk["type"] == "text-delta":
            got.text_deltas += 1
        elif chunk["type"] == "reasoning-delta":
            got.reasoning += chunk["delta"]
        elif chunk["type"] == "tool-input-available":
            got.calls.append(
                (chunk["toolCallId"], chunk["toolName"], json.dumps(chunk["input"])))
        elif chunk["type"] == "finish":
            got.finish = chunk["finishReason"]
            usage = chunk["messageMetadata"]["totalUsage"]
            got.prompt_tokens = usage["inputTokens"]
            got.completion_tokens = usage["outputTokens"]
    got.text = "".join(part["text"] for part in result["message"]["parts"]
                       if part["type"] == "text")
    return got


async def _messages(proxy: Proxy, extra: dict[str, Any]) -> Got:
    got = Got()
    async with _anthropic(proxy) as client, client.messages.stream(
        model="client-model", max_tokens=1000,
        messages=[{"role": "user", "content": PROMPT}], extra_body=extra,
    ) as stream:
        async for event in stream:
            if event.type == "text":
                got.text_deltas += 1
            elif event.type == "thinking":
                got.reasoning += event.thinking
        final = await stream.get_final_message()
    got.text = "".join(block.text for block in final.content if block.type == "text")
    got.calls = [(block.id, block.name, json.dumps(block.input))
                 for block in final.content if block.type == "tool_use"]
    got.finish = final.stop_reason
    got.prompt_tokens = final.usage.input_tokens
    got.completion_tokens = final.usage.output_tokens
    return got


STREAMED: dict[str, Callable[[Proxy, dict[str, Any]], Awaitable[Got]]] = {
    "chat": _chat, "responses": _responses, "messages": _messages, "ui": _ui,
}
STREAMED_CLIENTS = [*CLIENTS, "ui"]
TOOL_FINISH = {"chat": "tool_calls", "responses": "completed", "messages": "tool_use",
               "ui": "tool-calls"}


def _counted_prompt() -> int:
    """The prompt's tokens as tokenstream counts them (for an upstream that does not say
    before the reply)."""
    return count_prompt_tokens(Tokenizer(load_encoding()), [ChatMessage("user", PROMPT)])


def _serve(proxy: Proxy, script: Script, upstream: str, burst: int = 97) -> None:
    proxy.upstream.behaviour = streams(*bursts(DIALECT_STREAMS[upstream](script), burst))


# -- streamed replies ----------------------------------------------------------------------


@pytest.mark.parametrize("client", STREAMED_CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_text_finish_and_usage_reach_every_client(
    proxy: MakeProxy, upstream: str, client: str
) -> None:
    served = await proxy(upstream)
    _serve(served, FULL, upstream)
    got = await STREAMED[client](served, {})
    assert got.text == REPLY
    assert got.text_deltas > len(TEXT)  # re-tokenized: token by token, not as it came
    assert got.finish == TOOL_FINISH[client]
    assert got.completion_tokens == FULL.completion_tokens
    if client == "messages" and upstream != "anthropic":
        assert got.prompt_tokens == _counted_prompt()  # said in message_start, before the reply
    else:
        assert got.prompt_tokens == FULL.prompt_tokens
    assert len(served.upstream.seen) == 1, served.upstream.seen  # asked once
    assert served.upstream.seen[0].body["stream"] is True


@pytest.mark.parametrize("client", STREAMED_CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_reasoning_and_tool_calls_reach_every_client(
    proxy: MakeProxy, upstream: str, client: str
) -> None:
    served = await proxy(upstream)
    _serve(served, FULL, upstream)
    got = await STREAMED[client](served, {})
    assert got.reasoning == "".join(REASONING)
    assert [(call_id, name, json.loads(arguments)) for call_id, name, arguments in got.calls] == [
        (CALL[0], CALL[1], json.loads(ARGUMENTS))
    ]


@pytest.mark.parametrize("client", STREAMED_CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_length_is_mapped_for_every_client(
    proxy: MakeProxy, upstream: str, client: str
) -> None:
    served = await proxy(upstream)
    _serve(served, Script(text=["Once upon", " a time"], finish="length"), upstream)
    got = await STREAMED[client](served, {})
    assert got.text == "Once upon a time"
    assert got.finish == {"chat": "length", "responses": "incomplete",
                          "messages": "max_tokens", "ui": "length"}[client]


@pytest.mark.parametrize("client", STREAMED_CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_a_burst_is_re_paced(proxy: MakeProxy, upstream: str, client: str) -> None:
    """The whole reply in one upstream event and one write: the client gets it token by
    token at the profile's rate (steady: 50 tokens/s, a piece of n tokens n / 50 s after the
    one before), not at once."""
    served = await proxy(upstream)
    _serve(served, Script(text=[REPLY]), upstream, burst=1 << 20)
    got = await STREAMED[client](served, {"tokenstream": {"profile": "steady"}})
    assert got.text == REPLY
    pieces = Tokenizer(load_encoding()).pieces(REPLY)
    assert got.text_deltas == len(pieces)
    clock = served.app[STATE].clock
    assert isinstance(clock, FakeClock)
    due = list(accumulate((piece.tokens / 50 for piece in pieces[1:]), initial=0.0))
    assert clock.sleeps == pytest.approx(due)


# -- whole replies -------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_a_whole_answer_in_every_client_dialect(
    proxy: MakeProxy, upstream: str, client: str
) -> None:
    served = await proxy(upstream)
    same = CLIENT_DIALECT[client] == upstream
    if same:  # passed on as the upstream answered
        served.upstream.behaviour = answers(200, _whole_upstream_answer(upstream))
    else:  # read as a stream and added up
        _serve(served, FULL, upstream)
    if client == "chat":
        async with _openai(served) as sdk:
            completion = await sdk.chat.completions.create(
                model="client-model", messages=[{"role": "user", "content": PROMPT}]
            )
        message = completion.choices[0].message
        assert message.content == REPLY
        assert [(c.id, c.function.name, c.function.arguments)  # type: ignore[union-attr]
                for c in message.tool_calls or ()] == [(CALL[0], CALL[1], ARGUMENTS)]
        assert completion.choices[0].finish_reason == "tool_calls"
        assert completion.usage is not None
        usage = (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    elif client == "responses":
        async with _openai(served) as sdk:
            response = await sdk.responses.create(model="client-model", input=PROMPT)
        assert response.output_text == REPLY
        assert [(i.call_id, i.name, i.arguments) for i in response.output
                if i.type == "function_call"] == [(CALL[0], CALL[1], ARGUMENTS)]
        assert response.status == "completed"
        assert response.usage is not None
        usage = (response.usage.input_tokens, response.usage.output_tokens)
    else:
        async with _anthropic(served) as sdk:
            answer = await sdk.messages.create(
                model="client-model", max_tokens=1000,
                messages=[{"role": "user", "content": PROMPT}],
            )
        assert [b.text for b in answer.content if b.type == "text"] == [REPLY]
        assert [(b.id, b.name, b.input) for b in answer.content if b.type == "tool_use"] == [
            (CALL[0], CALL[1], json.loads(ARGUMENTS))
        ]
        assert answer.stop_reason == "tool_use"
        usage = (answer.usage.input_tokens, answer.usage.output_tokens)
    assert usage == (FULL.prompt_tokens, FULL.completion_tokens)
    (seen,) = served.upstream.seen
    assert seen.body.get("stream", False) is (not same)


def _whole_upstream_answer(dialect: str) -> dict[str, Any]:
    """``FULL`` as the upstream answers a request with ``stream: false``."""
    prompt, completion = FULL.prompt_tokens, FULL.completion_tokens
    if dialect == "openai-chat":
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": UPSTREAM_MODEL,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": REPLY, "tool_calls": [{
                    "id": CALL[0], "type": "function",
                    "function": {"name": CALL[1], "arguments": ARGUMENTS}}]}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }
    if dialect == "openai-responses":
        return {
            "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
            "model": UPSTREAM_MODEL, "error": None, "incomplete_details": None,
            "instructions": None, "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [],
            "output": [
                {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": REPLY, "annotations": []}]},
                {"id": "fc_1", "type": "function_call", "status": "completed",
                 "call_id": CALL[0], "name": CALL[1], "arguments": ARGUMENTS},
            ],
            "usage": {"input_tokens": prompt, "output_tokens": completion,
                      "total_tokens": prompt + completion,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": UPSTREAM_MODEL,
        "content": [{"type": "text", "text": REPLY},
                    {"type": "tool_use", "id": CALL[0], "name": CALL[1],
                     "input": json.loads(ARGUMENTS)}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500])
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_an_upstream_error_before_the_stream_in_every_clients_shape(
    proxy: MakeProxy, upstream: str, client: str, status: int
) -> None:
    served = await proxy(upstream)
    served.upstream.behaviour = answers(
        status, error_answer(upstream, status, "Slow down, please"), {"Retry-After": "7"}
    )
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as raised:
        await STREAMED[client](served, {})
    error = raised.value
    assert error.status_code == status
    assert error.response.headers["Retry-After"] == "7"
    assert isinstance(error.body, dict)
    if client == "messages":
        assert isinstance(error, anthropic.RateLimitError if status == 429
                          else anthropic.InternalServerError)
        assert error.body["type"] == "error"
        assert error.body["error"] == {
            "type": "rate_limit_error" if status == 429 else "api_error",
            "message": "Slow down, please",
        }
    else:
        assert isinstance(error, openai.RateLimitError if status == 429
                          else openai.InternalServerError)
        assert error.body["message"] == "Slow down, please"
    assert len(served.upstream.seen) == 1  # not sent twice


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_an_upstream_error_in_the_stream_in_every_clients_shape(
    proxy: MakeProxy, upstream: str, client: str
) -> None:
    served = await proxy(upstream)
    _serve(served, Script(text=["Partial ", "answer"], error="The model is overloaded"),
           upstream)
    text = ""
    if client == "chat":
        with pytest.raises(openai.APIError, match="The model is overloaded"):
            async with _openai(served) as sdk:
                stream = await sdk.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": PROMPT}], stream=True
                )
                async for chunk in stream:
                    text += "".join(c.delta.content or "" for c in chunk.choices)
    elif client == "responses":
        async with _openai(served) as sdk:
            events = [e async for e in await sdk.responses.create(
                model="m", input=PROMPT, stream=True)]
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert events[-1].type == "error"
        assert events[-1].message == "The model is overloaded"
    else:
        with pytest.raises(anthropic.APIStatusError, match="The model is overloaded") as raised:
            async with _anthropic(served) as sdk, sdk.messages.stream(
                model="m", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]
            ) as stream:
                async for piece in stream.text_stream:
                    text += piece
        body = raised.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        expected_type = "overloaded_error" if upstream == "anthropic" else "api_error"
        assert body["error"]["type"] == expected_type
    assert text == "Partial answer"


# -- the request the upstream gets ---------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL_ARGUMENTS = '{"city":"Paris"}'
CONVERSATION: dict[str, dict[str, Any]] = {
    "chat": {
        "model": "client-model", "stream": True, "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather", "parameters": SCHEMA}}],
    },
    "responses": {
        "model": "client-model", "stream": True, "max_output_tokens": 100,
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": TOOL_ARGUMENTS},
            {"type": "function_call_output", "call_id": "call_1", "output": "18°C, sunny"},
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "Current weather",
                   "parameters": SCHEMA}],
    },
    "messages": {
        "model": "client-model", "stream": True, "max_tokens": 100, "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C, sunny"}]},
        ],
        "tools": [{"name": "get_weather", "description": "Current weather",
                   "input_schema": SCHEMA}],
    },
}
UPSTREAM_BODY: dict[str, dict[str, Any]] = {
    "openai-chat": {
        "model": "client-model", "stream": True, "max_tokens": 100,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather", "parameters": SCHEMA}}],
    },
    "openai-responses": {
        "model": "client-model", "stream": True, "max_output_tokens": 100,
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": TOOL_ARGUMENTS},
            {"type": "function_call_output", "call_id": "call_1", "output": "18°C, sunny"},
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "Current weather",
                   "parameters": SCHEMA}],
    },
    "anthropic": {
        "model": "client-model", "stream": True, "max_tokens": 100, "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C, sunny"}]},
        ],
        "tools": [{"name": "get_weather", "description": "Current weather",
                   "input_schema": SCHEMA}],
    },
}
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}


async def _post(proxy: Proxy, client: str, body: dict[str, Any],
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.post(
        proxy.url(PATHS[client]), json=body, headers=headers
    ) as response:
        return response.status, await response.read()


@pytest.mark.parametrize(
    "client,upstream",
    [(c, u) for c in CLIENTS for u in UPSTREAMS if CLIENT_DIALECT[c] != u],
)
async def test_the_conversation_is_translated_for_the_upstream(
    proxy: MakeProxy, client: str, upstream: str
) -> None:
    served = await proxy(upstream)
    _serve(served, Script(text=["ok"]), upstream)
    status, _ = await _post(served, client, CONVERSATION[client])
    assert status == 200
    (seen,) = served.upstream.seen
    assert seen.body == UPSTREAM_BODY[upstream]
    if upstream == "anthropic":
        assert seen.headers["x-api-key"] == KEY
        assert seen.headers["anthropic-version"] == ANTHROPIC_VERSION
        assert "Authorization" not in seen.headers
    else:
        assert seen.headers["Authorization"] == f"Bearer {KEY}"
        assert "x-api-key" not in seen.headers


@pytest.mark.parametrize("client", CLIENTS)
async def test_the_same_dialect_goes_upstream_as_the_client_sent_it(
    proxy: MakeProxy, client: str
) -> None:
    upstream = CLIENT_DIALECT[client]
    served = await proxy(upstream)
    _serve(served, Script(text=["ok"]), upstream)
    body = {**CONVERSATION[client], "temperature": 0.5, "vendor_field": {"x": 1},
            "tokenstream": {"profile": "steady"}}
    status, _ = await _post(served, client, body)
    assert status == 200
    (seen,) = served.upstream.seen
    assert seen.body == {k: v for k, v in body.items() if k != "tokenstream"}


@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer client-own-key"}, {"x-api-key": "client-own-key"}]
)
async def test_a_clients_own_key_is_sent_the_upstreams_way(
    proxy: MakeProxy, upstream: str, headers: dict[str, str]
) -> None:
    served = await proxy(upstream, forward_client_auth=True)
    _serve(served, Script(text=["ok"]), upstream)
    status, _ = await _post(served, "chat", CONVERSATION["chat"], headers)
    assert status == 200
    response = await _get(served, "/v1/models", headers)
    assert response == 200
    for seen in served.upstream.seen:
        if upstream == "anthropic":
            assert seen.headers["x-api-key"] == "client-own-key"
            assert "Authorization" not in seen.headers
        else:
            assert seen.headers["Authorization"] == "Bearer client-own-key"
            assert "x-api-key" not in seen.headers


async def _get(proxy: Proxy, path: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.get(
        proxy.url(path), headers=headers
    ) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize(
    "client,upstream", [("responses", "anthropic"), ("messages", "openai-chat")]
)
async def test_a_built_in_tool_cannot_be_translated(
    proxy: MakeProxy, client: str, upstream: str
) -> None:
    served = await proxy(upstream)
    tool = ({"type": "web_search"} if client == "responses"
            else {"type": "web_search_20250305", "name": "web_search"})
    body = {**CONVERSATION[client], "tools": [tool]}
    status, raw = await _post(served, client, body)
    assert status == 400
    answer = json.loads(raw)
    if client == "messages":
        assert answer["type"] == "error"
        assert answer["error"]["type"] == "invalid_request_error"
        assert "web_search" in answer["error"]["message"]
    else:
        assert answer["error"]["param"] == "tools[0]"
        assert answer["error"]["code"] == "unsupported_tool"
    assert served.upstream.seen == []


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_the_stream_endpoint_in_front_of_every_upstream(
    proxy: MakeProxy, upstream: str
) -> None:
    served = await proxy(upstream)
    _serve(served, FULL, upstream)
    async with aiohttp.ClientSession() as http, http.get(
        served.url("/v1/stream"), params={"prompt": PROMPT, "model": "m1", "format": "json"}
    ) as response:
        assert response.status == 200
        events = parse_sse(await response.read())
    assert events[-1].data == "[DONE]"
    assert "".join(json.loads(e.data)["token"] for e in events[:-1]) == REPLY
    (seen,) = served.upstream.seen
    messages = [{"role": "user", "content": PROMPT}]
    assert seen.body == {
        "openai-chat": {"model": "m1", "messages": messages, "stream": True},
        "openai-responses": {"model": "m1", "stream": True,
                             "input": [{"type": "message", **messages[0]}]},
        "anthropic": {"model": "m1", "stream": True, "max_tokens": ANTHROPIC_MAX_TOKENS,
                      "messages": [{"role": "user",
                                    "content": [{"type": "text", "text": PROMPT}]}]},
    }[upstream]


@pytest.mark.parametrize("client", ["chat", "messages"])
async def test_an_error_in_a_stream_read_for_a_whole_answer_is_a_502(
    proxy: MakeProxy, client: str
) -> None:
    served = await proxy("openai-responses")
    _serve(served, Script(text=["Partial"], error="The model is overloaded"), "openai-responses")
    status, raw = await _post(served, client, {**CONVERSATION[client], "stream": False})
    assert status == 502
    answer = json.loads(raw)
    error = answer["error"]
    assert error["message"] == "The model is overloaded"
    if client == "messages":
        assert answer["type"] == "error" and error["type"] == "api_error"
    assert len(served.upstream.seen) == 1


@pytest.mark.parametrize("forward", [True, False])
async def test_no_key_leaks_from_an_anthropic_upstreams_refusal(
    proxy: MakeProxy, forward: bool
) -> None:
    served = await proxy("anthropic", forward_client_auth=forward)
    client_key = "sk-ant-client-own-key-987654321"
    served.upstream.behaviour = answers(401, {"type": "error", "error": {
        "type": "authentication_error",
        "message": f"invalid x-api-key: {client_key if forward else KEY}"}})
    status, raw = await _post(served, "chat", CONVERSATION["chat"], {"x-api-key": client_key})
    assert status == 401
    assert KEY.encode() not in raw and client_key.encode() not in raw
    message = json.loads(raw)["error"]["message"]
    if forward:
        assert message == "invalid x-api-key: [redacted]"
    else:  # the operator's key was refused: the message says so
        assert KEY_ENV in message
