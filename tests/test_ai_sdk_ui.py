"""The Vercel AI SDK's UI message stream (``tokenstream.dialects.ai_sdk_ui``): the request
parser and the encoder with vectors, and the route (``POST /api/chat``) over HTTP. The SDK
itself reads these streams in ``test_ai_sdk_node.py``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from tokenstream.config import Config
from tokenstream.config.settings import ServerConfig
from tokenstream.dialects.ai_sdk_ui import UIMessageStreamFormat, parse_ui_chat
from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import InvalidRequest

from support import MakeClient, parse_sse


def _body(messages: list[dict[str, Any]], **fields: Any) -> bytes:
    return json.dumps({"id": "chat-1", "messages": messages, **fields}).encode()


def _user(text: str, message_id: str = "u1") -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def _parts(stream: bytes) -> list[Any]:
    """Every event's data, parsed as JSON but the sentinel."""
    return [event.data if event.data == "[DONE]" else json.loads(event.data)
            for event in parse_sse(stream)]


def _types(parts: list[Any]) -> list[str]:
    return [part if part == "[DONE]" else part["type"] for part in parts]


# -- requests ------------------------------------------------------------------------------


def test_text_parts_are_a_message_s_text_and_other_parts_are_ignored() -> None:
    parsed = parse_ui_chat(_body([
        {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be terse."}]},
        {"id": "u", "role": "user", "parts": [
            {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,AA=="},
            {"type": "text", "text": "  你好 "},
            {"type": "data-weather", "data": {"city": "Paris"}},
            {"type": "text", "text": "👩‍👩‍👧‍👦\n"},
        ]},
    ]))
    assert parsed.messages == [
        ChatMessage("system", "Be terse."),
        ChatMessage("user", "  你好 👩‍👩‍👧‍👦\n"),
    ]


def test_an_assistant_message_is_a_turn_per_step_each_followed_by_its_tool_results() -> None:
    weather = {"type": "tool-get_weather", "toolCallId": "call_1", "state": "output-available",
               "input": {"city": "Paris"}, "output": {"temperature": 21, "sky": "晴れ"}}
    parsed = parse_ui_chat(_body([
        _user("weather?"),
        {"id": "a1", "role": "assistant", "parts": [
            {"type": "step-start"},
            {"type": "reasoning", "text": "They want the weather."},
            {"type": "text", "text": "Checking."},
            weather,
            {"type": "dynamic-tool", "toolName": "search", "toolCallId": "call_2",
             "state": "output-available", "input": {}, "output": "plain text result"},
            {"type": "step-start"},
            {"type": "text", "text": "It is 21 degrees."},
            {"type": "tool-lookup", "toolCallId": "call_3", "state": "output-error",
             "input": {}, "errorText": "lookup failed"},
            {"type": "tool-delete", "toolCallId": "call_4", "state": "output-denied",
             "input": {}, "approval": {"id": "ap1", "approved": False, "reason": "no"}},
            {"type": "tool-wipe", "toolCallId": "call_5", "state": "output-denied",
             "input": {}, "approval": {"id": "ap2", "approved": False}},
            {"type": "tool-pending", "toolCallId": "call_6", "state": "input-available",
             "input": {}},
            {"type": "tool-web", "toolCallId": "call_7", "state": "output-available",
             "input": {}, "output": "ran by the provider", "providerExecuted": True},
        ]},
    ]))
    assert parsed.messages == [
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "Checking."),
        ChatMessage("tool", '{"temperature":21,"sky":"晴れ"}', tool_call_id="call_1"),
        ChatMessage("tool", "plain text result", tool_call_id="call_2"),
        ChatMessage("assistant", "It is 21 degrees."),
        ChatMessage("tool", "lookup failed", tool_call_id="call_3"),
        ChatMessage("tool", "no", tool_call_id="call_4"),
        ChatMessage("tool", "Tool call execution denied.", tool_call_id="call_5"),
    ]


def test_an_assistant_step_with_only_a_tool_call_is_an_empty_turn() -> None:
    parsed = parse_ui_chat(_body([_user("go"), {"id": "a", "role": "assistant", "parts": [
        {"type": "step-start"},
        {"type": "tool-run", "toolCallId": "c", "state": "output-available", "input": {},
         "output": None},
    ]}]))
    assert parsed.messages[1:] == [
        ChatMessage("assistant", ""), ChatMessage("tool", "null", tool_call_id="c")
    ]


def test_the_reply_continues_the_last_message_when_it_is_the_assistant_s() -> None:
    continued = parse_ui_chat(_body([
        _user("go"), {"id": "a-7", "role": "assistant", "parts": [{"type": "step-start"}]},
    ]))
    assert continued.message_id == "a-7"
    fresh = parse_ui_chat(_body([_user("go")]))
    assert fresh.message_id.startswith("msg-")
    assert fresh.message_id != parse_ui_chat(_body([_user("go")])).message_id


def test_app_fields_are_ignored_and_tokenstream_overrides_are_read() -> None:
    parsed = parse_ui_chat(_body(
        [_user("hi")], trigger="regenerate-message", messageId="m1", model="gpt-4o",
        sessionId=42, stream=False, tokenstream={"source": "echo", "tokens_per_second": 5},
    ))
    assert parsed.overrides.source == "echo"
    assert parsed.overrides.tokens_per_second == 5


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "must be a JSON object"),
        (b"{}", "messages", "Missing required parameter: 'messages'"),
        (_body([]), "messages", "at least 1 item"),
        (json.dumps({"messages": "hi"}).encode(), "messages", "valid array"),
        (_body([{"id": "x", "role": "tool", "parts": []}]), "messages.0.role", "'assistant'"),
        (_body([{"id": "x", "role": "user"}]), "messages.0.parts", "Missing required"),
        (_body([{"id": "x", "role": "user", "parts": [{"type": "text"}]}]),
         "messages.0.parts.0", "a text part needs 'text'"),
        (_body([{"id": "x", "role": "user", "parts": [{"type": "text", "text": 5}]}]),
         "messages.0.parts.0.text", "valid string"),
        (_body([{"id": 5, "role": "user", "parts": []}]), "messages.0.id", "valid string"),
        (_body([{"id": "x", "role": "assistant", "parts": [{"type": "tool-x", "state": "x"}]}]),
         "messages.0.parts.0", "needs 'toolCallId' and 'state'"),
        (_body([{"id": "x", "role": "assistant", "parts": [
            {"type": "tool-x", "toolCallId": "c", "state": "output-error"}]}]),
         "messages.0.parts.0", "needs 'errorText'"),
        (_body([_user("hi")], trigger="resume"), "trigger", "'submit-message'"),
        (_body([_user("hi")], tokenstream={"speed": 3}), "tokenstream.speed", "Unrecognized"),
    ],
)
def test_a_bad_request_is_refused_naming_what_is_wrong(
    body: bytes, param: str | None, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_ui_chat(body)
    assert caught.value.param == param
    assert message in caught.value.message


# -- replies -------------------------------------------------------------------------------


USAGE = Usage(7, 3)


def _stream(*items: Piece | Any, usage: Usage | None = USAGE) -> bytes:
    """What the encoder makes of ``items`` (pieces and events), then a complete ending."""
    encoder = UIMessageStreamFormat(message_id="msg-1")
    out = b""
    for item in items:
        out += encoder.piece(item) if isinstance(item, Piece) else encoder.event(item)
    if usage is not None:
        out += encoder.event(usage)
    return out + encoder.end()


def test_a_text_reply_is_exactly_these_bytes() -> None:
    assert _stream(Piece("Hi"), Piece(' "you"\n'), Finish("stop")) == (
        b'data: {"type":"start","messageId":"msg-1"}\n\n'
        b'data: {"type":"start-step"}\n\n'
        b'data: {"type":"text-start","id":"text-1"}\n\n'
        b'data: {"type":"text-delta","id":"text-1","delta":"Hi"}\n\n'
        b'data: {"type":"text-delta","id":"text-1","delta":" \\"you\\"\\n"}\n\n'
        b'data: {"type":"text-end","id":"text-1"}\n\n'
        b'data: {"type":"finish-step"}\n\n'
        b'data: {"type":"finish","finishReason":"stop","messageMetadata":{"totalUsage":'
        b'{"inputTokens":7,"inputTokenDetails":{},"outputTokens":3,"outputTokenDetails":{},'
        b'"totalTokens":10}}}\n\n'
        b"data: [DONE]\n\n"
    )


def test_text_is_sent_as_utf_8_unescaped() -> None:
    text = "你好👩‍👩‍👧‍👦\u2028"
    parts = _parts(_stream(Piece(text)))
    assert [p["delta"] for p in parts if p != "[DONE]" and p["type"] == "text-delta"] == [text]
    assert "你好👩‍👩‍👧‍👦".encode() in _stream(Piece(text))


def test_an_empty_reply_still_starts_and_finishes() -> None:
    assert _types(_parts(_stream(usage=None))) == [
        "start", "start-step", "finish-step", "finish", "[DONE]",
    ]
    assert _parts(_stream(usage=None))[3] == {"type": "finish", "finishReason": "stop"}


def test_reasoning_text_and_tool_calls_keep_their_order_as_parts() -> None:
    parts = _parts(_stream(
        ReasoningDelta("Let"), ReasoningDelta(" me see"),
        Piece("Sure"),
        ReasoningDelta("hmm"),
        TextDelta(", checking."),
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallDelta(0, '{"city":'), ToolCallDelta(0, '"東京"}'),
        ToolCallEnd(0),
        Finish("tool_calls"),
    ))
    assert parts[2:-3] == [
        {"type": "reasoning-start", "id": "reasoning-1"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "Let"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": " me see"},
        {"type": "reasoning-end", "id": "reasoning-1"},
        {"type": "text-start", "id": "text-2"},
        {"type": "text-delta", "id": "text-2", "delta": "Sure"},
        {"type": "text-end", "id": "text-2"},
        {"type": "reasoning-start", "id": "reasoning-3"},
        {"type": "reasoning-delta", "id": "reasoning-3", "delta": "hmm"},
        {"type": "reasoning-end", "id": "reasoning-3"},
        {"type": "text-start", "id": "text-4"},
        {"type": "text-delta", "id": "text-4", "delta": ", checking."},
        {"type": "text-end", "id": "text-4"},
        {"type": "tool-input-start", "toolCallId": "call_a", "toolName": "get_weather"},
        {"type": "tool-input-delta", "toolCallId": "call_a", "inputTextDelta": '{"city":'},
        {"type": "tool-input-delta", "toolCallId": "call_a", "inputTextDelta": '"東京"}'},
        {"type": "tool-input-available", "toolCallId": "call_a", "toolName": "get_weather",
         "input": {"city": "東京"}},
    ]
    assert parts[-2]["finishReason"] == "tool-calls"


def test_finish_closes_what_is_open_and_interleaved_tool_calls_end_in_start_order() -> None:
    parts = _parts(_stream(
        ToolCallStart(0, "c0", "a"),
        ToolCallStart(1, "c1", "b"),
        ToolCallDelta(1, '{"x":'), ToolCallDelta(0, "[1,"), ToolCallDelta(1, "2}"),
        ToolCallDelta(0, "2]"),
        Piece("after"),
        Finish("tool_calls"),
    ))
    kinds = [(p["type"], p.get("toolCallId") or p.get("id")) for p in parts[2:-3]]
    assert kinds == [
        ("tool-input-start", "c0"), ("tool-input-start", "c1"),
        ("tool-input-delta", "c1"), ("tool-input-delta", "c0"), ("tool-input-delta", "c1"),
        ("tool-input-delta", "c0"),
        ("text-start", "text-1"), ("text-delta", "text-1"),
        ("text-end", "text-1"), ("tool-input-available", "c0"), ("tool-input-available", "c1"),
    ]
    available = {p["toolCallId"]: p["input"] for p in parts if p != "[DONE]"
                 and p["type"] == "tool-input-available"}
    assert available == {"c0": [1, 2], "c1": {"x": 2}}


def test_end_closes_what_is_open_without_a_finish() -> None:
    parts = _parts(_stream(ReasoningDelta("r"), ToolCallStart(0, "c", "t"), usage=None))
    assert _types(parts) == [
        "start", "start-step", "reasoning-start", "reasoning-delta", "reasoning-end",
        "tool-input-start", "tool-input-available", "finish-step", "finish", "[DONE]",
    ]
    assert parts[6]["input"] == {}  # no arguments: an empty object, as the SDK takes them


@pytest.mark.parametrize("arguments", ['{"city": "Par', "NaN", '{"a": Infinity}', "[1] x"])
def test_arguments_that_are_not_json_end_as_a_tool_input_error(arguments: str) -> None:
    parts = _parts(_stream(ToolCallStart(0, "c", "t"), ToolCallDelta(0, arguments),
                           ToolCallEnd(0)))
    error = next(p for p in parts if p != "[DONE]" and p["type"] == "tool-input-error")
    assert error["toolCallId"] == "c" and error["toolName"] == "t"
    assert error["input"] == arguments
    assert error["errorText"].startswith("The tool call's arguments are not JSON")


def test_what_has_no_open_call_or_no_form_is_left_out() -> None:
    encoder = UIMessageStreamFormat(message_id="m")
    assert encoder.event(ToolCallDelta(3, "{}")) == b""
    assert encoder.event(ToolCallEnd(3)) == b""
    assert encoder.event(ReasoningDelta("")) == b""
    assert encoder.event(ModelName("other-model")) == b""
    assert encoder.event(Passthrough({"refusal": "no"})) == b""


def test_a_reused_index_ends_the_open_call_first() -> None:
    parts = _parts(_stream(
        ToolCallStart(0, "c1", "t"), ToolCallDelta(0, "{}"),
        ToolCallStart(0, "c2", "t"), ToolCallDelta(0, '{"n":2}'),
    ))
    available = [(p["toolCallId"], p["input"]) for p in parts
                 if p != "[DONE]" and p["type"] == "tool-input-available"]
    assert available == [("c1", {}), ("c2", {"n": 2})]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "tool-calls"),
     ("content_filter", "content-filter"), ("function_call", "other"), ("weird", "other")],
)
def test_finish_reasons_are_in_the_sdk_s_words(reason: str, expected: str) -> None:
    assert _parts(_stream(Finish(reason)))[-2]["finishReason"] == expected


def test_an_error_is_an_error_part_then_the_sentinel() -> None:
    encoder = UIMessageStreamFormat(message_id="m")
    encoder.piece(Piece("partial"))
    assert encoder.error("The upstream failed.", "upstream_error", None) == (
        b'data: {"type":"error","errorText":"The upstream failed."}\n\n'
        b"data: [DONE]\n\n"
    )


# -- the route -----------------------------------------------------------------------------


async def test_the_route_streams_with_the_protocol_header(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.post("/api/chat", data=_body(
        [_user("hello")], tokenstream={"source": "echo"}, sessionId="app field",
    ))
    assert response.status == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["Content-Type"].startswith("text/event-stream")
    parts = _parts(await response.read())
    assert "".join(p["delta"] for p in parts if p != "[DONE]" and p["type"] == "text-delta") \
        == "hello"
    assert parts[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("method", "body", "status", "text"),
    [
        ("POST", _body([]), 400,
         "Invalid value for 'messages': List should have at least 1 item after validation, "
         "not 0."),
        ("POST", _body([_user("hi")], tokenstream={"profile": "nope"}), 400,
         "Unknown profile 'nope' in 'tokenstream.profile'."),
        ("POST", _body([_user("hi")], tokenstream={"source": "upstream"}), 400,
         "The source 'upstream' is not available here: set upstream.base_url to use it."),
        ("GET", None, 405, "Method GET is not allowed on /api/chat."),
    ],
)
async def test_refusals_are_plain_text_the_sdk_shows_as_its_error_message(
    make_client: MakeClient, method: str, body: bytes | None, status: int, text: str
) -> None:
    client = await make_client()
    response = await client.request(method, "/api/chat", data=body)
    assert response.status == status
    assert response.headers["Content-Type"].startswith("text/plain")
    assert (await response.text()).startswith(text)


async def test_other_paths_keep_the_openai_error_shape(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.post("/v1/responses", data=b"{}")
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "model"


async def test_the_path_is_configurable(make_client: MakeClient) -> None:
    client = await make_client(Config(server=ServerConfig(ai_sdk_chat_path="/chat")))
    assert (await client.post("/chat", data=_body([_user("hello")]))).status == 200
    moved = await client.post("/api/chat", data=_body([_user("hello")]))
    assert moved.status == 404
    assert "error" in await moved.json()


@pytest.mark.parametrize("path", ["/api/chat", "/chat", "/v2/ai-sdk/chat_stream", "/a.b~c"])
def test_a_chat_path_is_a_plain_path(path: str) -> None:
    assert ServerConfig(ai_sdk_chat_path=path).ai_sdk_chat_path == path


@pytest.mark.parametrize(
    "path",
    ["api/chat", "/api/chat/", "/", "", "/api/{chat}", "/api/chat?x=1", "/api chat", "/a/../b",
     "/./chat", "/v1/chat", "/v1/chat/completions", "/static/chat", "/healthz", "/metrics",
     "/api/ch\u00e4t"],
)
def test_a_chat_path_that_cannot_be_served_is_refused(path: str) -> None:
    with pytest.raises(ValidationError, match="ai_sdk_chat_path"):
        ServerConfig(ai_sdk_chat_path=path)


async def test_a_browser_app_on_an_allowed_origin_may_post_and_read_the_stream(
    make_client: MakeClient,
) -> None:
    origin = "http://localhost:3000"
    client = await make_client(Config(server=ServerConfig(cors_origins=[origin])))
    preflight = await client.options("/api/chat", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    })
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"
    response = await client.post("/api/chat", data=_body([_user("hello")]),
                                 headers={"Origin": origin})
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert _parts(await response.read())[-1] == "[DONE]"
