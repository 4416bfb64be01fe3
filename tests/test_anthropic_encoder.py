"""The Anthropic Messages dialect without the server: the encoder's events for reasoning,
text and tool calls in every order, the whole ``message``, and requests with tool results.

The official ``anthropic`` SDK judges the bytes, served to it through a mock transport."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
from anthropic import Anthropic

from tokenstream.dialects.anthropic_messages import (
    AnthropicMessagesFormat,
    message_body,
    parse_messages,
)
from tokenstream.engine.events import (
    Finish,
    ReasoningDelta,
    ReplyContent,
    ReplyEvent,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import InvalidRequest

from support import canned_client, parse_sse

TEXT_PIECES = ["你", "好，", "世界！", "👩", "\u200d👩", "\u200d👧\u200d👦", " 🇯", "🇵"]
TEXT = "".join(TEXT_PIECES)
REASONING_PIECES = ["Let", " me", " look", " up 东京", "."]
WEATHER_ARGUMENTS = ['{"', "city", '":"', "東", "京", '","days":[1,', "2]}"]
TIME_ARGUMENTS = ['{"zone":', '"Asia/', 'Tokyo"}']

Item = Piece | ReplyEvent


def _in_engine_order() -> list[Item]:
    """Reasoning, text, two tool calls, finish and usage, as the scripted engine paces them."""
    return [
        *(ReasoningDelta(text) for text in REASONING_PIECES),
        *(Piece(text) for text in TEXT_PIECES),
        ToolCallStart(0, "call_weather", "get_weather"),
        *(ToolCallDelta(0, part) for part in WEATHER_ARGUMENTS),
        ToolCallEnd(0),
        ToolCallStart(1, "call_time", "get_time"),
        *(ToolCallDelta(1, part) for part in TIME_ARGUMENTS),
        ToolCallEnd(1),
        Finish("tool_calls"),
        Usage(12, 34),
    ]


def _interleaved() -> list[Item]:
    """As an upstream may send it: text, reasoning, text again, parallel calls whose
    arguments interleave, no ToolCallEnd before the finish."""
    return [
        Piece("Hi"),
        ReasoningDelta("hmm"),
        Piece(" 你"),
        Piece("好"),
        ToolCallStart(0, "call_weather", "get_weather"),
        ToolCallDelta(0, '{"city":'),
        ToolCallStart(1, "call_time", "get_time"),
        ToolCallDelta(1, '{"zone":"UTC"}'),
        ToolCallDelta(0, '"東京"}'),
        Finish("tool_calls"),
        Usage(3, 4),
    ]


def _encode(items: Sequence[Item], encoder: AnthropicMessagesFormat | None = None) -> bytes:
    encoder = encoder or AnthropicMessagesFormat(model="claude-test")
    out = b"".join(
        encoder.piece(item) if isinstance(item, Piece) else encoder.event(item)
        for item in items
    )
    return out + encoder.end()


def _events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = [(event.event, json.loads(event.data)) for event in parse_sse(body)]
    assert all(event == data["type"] for event, data in events)
    return events


def _delta(index: int, kind: str, value: str) -> tuple[str, dict[str, Any]]:
    field = {"text_delta": "text", "thinking_delta": "thinking",
             "input_json_delta": "partial_json"}[kind]
    return ("content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}})


def _start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block})


def _stop(index: int) -> tuple[str, dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


THINKING_START = {"type": "thinking", "thinking": "", "signature": ""}
TEXT_START = {"type": "text", "text": ""}


def _tool_start(call_id: str, name: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": {}}


def _without_signatures(
    events: list[tuple[str, dict[str, Any]]],
) -> tuple[list[tuple[str, dict[str, Any]]], list[int]]:
    """The events but the ``signature_delta``s, and the indexes those came on."""
    kept, signed = [], []
    for name, data in events:
        if name == "content_block_delta" and data["delta"]["type"] == "signature_delta":
            assert re.fullmatch(r"[A-Za-z0-9+/]{40,}={0,2}", data["delta"]["signature"])
            signed.append(data["index"])
        else:
            kept.append((name, data))
    return kept, signed


def test_the_events_of_reasoning_text_and_two_tool_calls() -> None:
    encoder = AnthropicMessagesFormat(model="claude-test")
    encoder.input_tokens = 12
    events, signed = _without_signatures(_events(_encode(_in_engine_order(), encoder)))
    assert events[0] == ("message_start", {"type": "message_start", "message": {
        "id": encoder.message_id, "type": "message", "role": "assistant", "content": [],
        "model": "claude-test", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 0},
    }})
    assert events[1:] == [
        _start(0, THINKING_START),
        *(_delta(0, "thinking_delta", text) for text in REASONING_PIECES),
        _stop(0),
        _start(1, TEXT_START),
        *(_delta(1, "text_delta", text) for text in TEXT_PIECES),
        _stop(1),
        _start(2, _tool_start("call_weather", "get_weather")),
        *(_delta(2, "input_json_delta", part) for part in WEATHER_ARGUMENTS),
        _stop(2),
        _start(3, _tool_start("call_time", "get_time")),
        *(_delta(3, "input_json_delta", part) for part in TIME_ARGUMENTS),
        _stop(3),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 34}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert signed == [0]


def test_the_signature_comes_right_before_the_thinking_blocks_stop() -> None:
    events = _events(_encode([ReasoningDelta("a"), Piece("b")]))
    names = [(name, data.get("delta", {}).get("type")) for name, data in events]
    assert names[1:5] == [
        ("content_block_start", None),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "signature_delta"),
        ("content_block_stop", None),
    ]


def test_a_text_piece_is_one_delta_event_byte_for_byte() -> None:
    encoder = AnthropicMessagesFormat(model="m")
    encoder.piece(Piece("a"))
    assert encoder.piece(Piece('你"\n👩\u200d', tokens=2)) == (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"' + '你\\"\\n👩\u200d'.encode() + b'"}}\n\n'
    )


def test_an_interleaved_upstream_order() -> None:
    events, signed = _without_signatures(_events(_encode(_interleaved())))
    assert events[1:] == [
        _start(0, TEXT_START),
        _delta(0, "text_delta", "Hi"),
        _stop(0),
        _start(1, THINKING_START),
        _delta(1, "thinking_delta", "hmm"),
        _stop(1),
        _start(2, TEXT_START),
        _delta(2, "text_delta", " 你"),
        _delta(2, "text_delta", "好"),
        _stop(2),
        _start(3, _tool_start("call_weather", "get_weather")),
        _delta(3, "input_json_delta", '{"city":'),
        _stop(3),
        _start(4, _tool_start("call_time", "get_time")),
        _delta(4, "input_json_delta", '{"zone":"UTC"}'),
        _delta(3, "input_json_delta", '"東京"}'),  # a late fragment, on its own block
        _stop(4),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert signed == [1]


@pytest.mark.parametrize(
    ("reason", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
     ("content_filter", "refusal")],
)
def test_finish_reasons_in_anthropics_words(reason: str, stop_reason: str) -> None:
    events = _events(_encode([Piece("x"), Finish(reason), Usage(1, 1)]))
    assert events[-2][1]["delta"]["stop_reason"] == stop_reason


def test_a_reply_without_content_has_no_blocks() -> None:
    events = _events(_encode([Finish("stop"), Usage(1, 0)]))
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]


def test_a_call_without_an_id_gets_one_and_a_delta_without_a_call_is_left_out() -> None:
    events = _events(_encode([ToolCallDelta(5, "{}"), ToolCallStart(0, "", "f")]))
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "content_block_stop", "message_delta",
        "message_stop",
    ]
    assert re.fullmatch(r"toolu_[0-9a-f]{30}", events[1][1]["content_block"]["id"])


# -- the official SDK as the judge ---------------------------------------------------------


def _sdk(body: bytes, content_type: str) -> Anthropic:
    client = canned_client(body, content_type=content_type, path="/v1/messages")
    return Anthropic(api_key="test", base_url="http://tokenstream.test", max_retries=0,
                     http_client=client)


def _final_message(items: Sequence[Item]) -> Any:
    with _sdk(_encode(items), "text/event-stream") as client, client.messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_message()


def test_the_sdk_reassembles_thinking_text_and_tool_use_blocks() -> None:
    final = _final_message(_in_engine_order())
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    thinking, text, weather, time = final.content
    assert thinking.thinking == "".join(REASONING_PIECES)
    assert thinking.signature
    assert text.text == TEXT
    assert (weather.id, weather.name, weather.input) == (
        "call_weather", "get_weather", {"city": "東京", "days": [1, 2]}
    )
    assert (time.id, time.name, time.input) == ("call_time", "get_time", {"zone": "Asia/Tokyo"})
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 34


def test_the_sdk_reassembles_an_interleaved_upstream_order() -> None:
    final = _final_message(_interleaved())
    assert [block.type for block in final.content] == [
        "text", "thinking", "text", "tool_use", "tool_use"
    ]
    assert final.content[2].text == " 你好"
    assert final.content[3].input == {"city": "東京"}
    assert final.content[4].input == {"zone": "UTC"}
    assert final.stop_reason == "tool_use"


def test_the_sdk_streams_the_text_deltas_in_order() -> None:
    with _sdk(_encode(_in_engine_order()), "text/event-stream") as client, \
            client.messages.stream(model="claude-test", max_tokens=100,
                                   messages=[{"role": "user", "content": "hi"}]) as stream:
        assert list(stream.text_stream) == TEXT_PIECES


def test_a_whole_message_with_every_kind_of_block() -> None:
    content = ReplyContent(
        text=TEXT,
        reasoning="Let me think.",
        tool_calls=[
            ToolCall("call_weather", "get_weather", '{"city":"東京"}', 0),
            ToolCall("call_time", "get_time", '{"zone":"Asia/To', 1),  # cut by max_tokens
        ],
        finish_reason="tool_calls",
    )
    body = json.dumps(message_body("claude-test", content, Usage(7, 9))).encode()
    with _sdk(body, "application/json") as client:
        message = client.messages.create(
            model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
    assert [block.type for block in message.content] == [
        "thinking", "text", "tool_use", "tool_use"
    ]
    thinking, text, weather, time = message.content
    assert thinking.thinking == "Let me think." and thinking.signature
    assert text.text == TEXT
    assert (weather.id, weather.name, weather.input) == (
        "call_weather", "get_weather", {"city": "東京"}
    )
    assert time.input == {}  # the members complete so far: none
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 9)


def test_a_whole_message_of_text_only_is_as_before() -> None:
    body = message_body("m", ReplyContent(text="hi", finish_reason="length"), Usage(1, 1))
    assert body["content"] == [{"type": "text", "text": "hi"}]
    assert body["stop_reason"] == "max_tokens"


# -- requests ------------------------------------------------------------------------------


def _parse(messages: list[dict[str, Any]]) -> list[ChatMessage]:
    body = {"model": "m", "max_tokens": 10, "messages": messages}
    return parse_messages(json.dumps(body).encode()).messages


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
            "input": {"city": "東京"}}


def test_tool_results_become_tool_messages_then_the_text() -> None:
    messages = _parse([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "s"},
            {"type": "text", "text": "Let me check."},
            TOOL_USE,
            {**TOOL_USE, "id": "toolu_2"},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "晴れ 👩‍👩‍👧‍👦"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": [
                {"type": "text", "text": "no "}, {"type": "image", "source": {}},
                {"type": "text", "text": "data"},
            ]},
            {"type": "text", "text": "and "},
            {"type": "text", "text": "tomorrow?"},
        ]},
    ])
    assert messages == [
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "Let me check.", tool_calls=(
            ToolCall("toolu_1", "get_weather", '{"city":"東京"}', 0),
            ToolCall("toolu_2", "get_weather", '{"city":"東京"}', 1),
        )),
        ChatMessage("tool", "晴れ 👩‍👩‍👧‍👦", tool_call_id="toolu_1"),
        ChatMessage("tool", "no data", tool_call_id="toolu_2"),
        ChatMessage("user", "and tomorrow?"),
    ]


def test_a_tool_result_alone_is_only_the_tool_message() -> None:
    messages = _parse([
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
    ])
    assert messages == [ChatMessage("tool", "", tool_call_id="toolu_1")]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
         "messages.0"),
        ({"role": "user", "content": [TOOL_USE]}, "messages.0"),
        ({"role": "user", "content": [{"type": "tool_result", "content": "x"}]},
         "messages.0.content.0.tool_result.tool_use_id"),
        ({"role": "assistant", "content": [{**TOOL_USE, "input": "x"}]},
         "messages.0.content.0.tool_use.input"),
    ],
)
def test_misplaced_or_malformed_tool_blocks_are_refused(
    message: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _parse([message])
    assert refused.value.status == 400
    assert refused.value.param == param


def test_a_calls_block_stops_at_its_end_not_later() -> None:
    encoder = AnthropicMessagesFormat(model="m")
    encoder.event(ToolCallStart(0, "call_a", "f"))
    encoder.event(ToolCallDelta(0, "{}"))
    assert encoder.event(ToolCallEnd(1)) == b""  # not the open call
    assert _events(encoder.event(ToolCallEnd(0))) == [_stop(0)]
    assert encoder.event(ToolCallEnd(0)) == b""
