"""The OpenAI Responses dialect without the server: the encoder's events for reasoning, text
and function calls in every order, the whole ``response``, and input items.

The official ``openai`` SDK judges the bytes, served to it through a mock transport."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
from openai import OpenAI
from openai.types.responses import (
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseReasoningItem,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseTextDeltaEvent,
)

from tokenstream.dialects.openai_responses import (
    ResponsesFormat,
    parse_responses,
    response_body,
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
REASONING_PIECES = ["**Weather**", "\n\nLet", " me", " look", " up 东京", "."]
REASONING = "".join(REASONING_PIECES)
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
        Usage(12, 34, {"completion_tokens_details": {"reasoning_tokens": 6}}),
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


def _encode(items: Sequence[Item], encoder: ResponsesFormat | None = None) -> bytes:
    encoder = encoder or ResponsesFormat(model="gpt-test")
    out = b"".join(
        encoder.piece(item) if isinstance(item, Piece) else encoder.event(item)
        for item in items
    )
    return out + encoder.end()


def _events(body: bytes) -> list[dict[str, Any]]:
    """The events' data, checked for their event names and sequence numbers."""
    events = parse_sse(body)
    data = [json.loads(event.data) for event in events]
    assert [event.event for event in events] == [item["type"] for item in data]
    assert [item["sequence_number"] for item in data] == list(range(len(data)))
    for item in data:
        del item["sequence_number"]
    return data


class Ids:
    """The ids a stream gave its items, by output index, checked for their shape."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.by_index = {
            event["output_index"]: event["item"]["id"]
            for event in events
            if event["type"] == "response.output_item.added"
        }
        for item_id in self.by_index.values():
            assert re.fullmatch(r"(rs|msg|fc)_[0-9a-f]{40}", item_id)

    def __getitem__(self, output_index: int) -> str:
        return self.by_index[output_index]


def _reasoning_events(ids: Ids, index: int, pieces: list[str]) -> list[dict[str, Any]]:
    where = {"item_id": ids[index], "output_index": index, "summary_index": 0}
    text = "".join(pieces)
    return [
        {"type": "response.output_item.added", "output_index": index,
         "item": {"id": ids[index], "type": "reasoning", "summary": []}},
        {"type": "response.reasoning_summary_part.added", **where,
         "part": {"type": "summary_text", "text": ""}},
        *({"type": "response.reasoning_summary_text.delta", **where, "delta": piece}
          for piece in pieces),
        {"type": "response.reasoning_summary_text.done", **where, "text": text},
        {"type": "response.reasoning_summary_part.done", **where,
         "part": {"type": "summary_text", "text": text}},
        {"type": "response.output_item.done", "output_index": index,
         "item": {"id": ids[index], "type": "reasoning",
                  "summary": [{"type": "summary_text", "text": text}]}},
    ]


def _message(item_id: str, text: str | None) -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "status": "in_progress" if text is None else "completed",
        "role": "assistant",
        "content": [] if text is None else [
            {"type": "output_text", "text": text, "annotations": []}
        ],
    }


def _message_events(ids: Ids, index: int, pieces: list[str]) -> list[dict[str, Any]]:
    where = {"item_id": ids[index], "output_index": index, "content_index": 0}
    text = "".join(pieces)
    return [
        {"type": "response.output_item.added", "output_index": index,
         "item": _message(ids[index], None)},
        {"type": "response.content_part.added", **where,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        *({"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
          for piece in pieces),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where,
         "part": {"type": "output_text", "text": text, "annotations": []}},
        {"type": "response.output_item.done", "output_index": index,
         "item": _message(ids[index], text)},
    ]


def _call(item_id: str, call_id: str, name: str, arguments: str | None) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call",
            "status": "in_progress" if arguments is None else "completed",
            "arguments": arguments or "", "call_id": call_id, "name": name}


def _call_added(ids: Ids, index: int, call_id: str, name: str) -> dict[str, Any]:
    return {"type": "response.output_item.added", "output_index": index,
            "item": _call(ids[index], call_id, name, None)}


def _arguments_delta(ids: Ids, index: int, delta: str) -> dict[str, Any]:
    return {"type": "response.function_call_arguments.delta", "item_id": ids[index],
            "output_index": index, "delta": delta}


def _call_done(ids: Ids, index: int, call_id: str, name: str, arguments: str) -> list[Any]:
    return [
        {"type": "response.function_call_arguments.done", "item_id": ids[index],
         "output_index": index, "arguments": arguments},
        {"type": "response.output_item.done", "output_index": index,
         "item": _call(ids[index], call_id, name, arguments)},
    ]


def _response(encoder: ResponsesFormat, status: str, output: list[Any], usage: Any) -> Any:
    return {
        "id": encoder.response_id, "object": "response", "created_at": encoder.created_at,
        "status": status, "error": None, "incomplete_details": None, "instructions": None,
        "model": "gpt-test", "output": output, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [], "usage": usage,
    }


def test_the_events_of_reasoning_text_and_two_function_calls() -> None:
    encoder = ResponsesFormat(model="gpt-test")
    events = _events(_encode(_in_engine_order(), encoder))
    ids = Ids(events)
    weather = "".join(WEATHER_ARGUMENTS)
    time = "".join(TIME_ARGUMENTS)
    assert events == [
        {"type": "response.created", "response": _response(encoder, "in_progress", [], None)},
        {"type": "response.in_progress", "response": _response(encoder, "in_progress", [], None)},
        *_reasoning_events(ids, 0, REASONING_PIECES),
        *_message_events(ids, 1, TEXT_PIECES),
        _call_added(ids, 2, "call_weather", "get_weather"),
        *(_arguments_delta(ids, 2, part) for part in WEATHER_ARGUMENTS),
        *_call_done(ids, 2, "call_weather", "get_weather", weather),
        _call_added(ids, 3, "call_time", "get_time"),
        *(_arguments_delta(ids, 3, part) for part in TIME_ARGUMENTS),
        *_call_done(ids, 3, "call_time", "get_time", time),
        {"type": "response.completed", "response": _response(encoder, "completed", [
            {"id": ids[0], "type": "reasoning",
             "summary": [{"type": "summary_text", "text": REASONING}]},
            _message(ids[1], TEXT),
            _call(ids[2], "call_weather", "get_weather", weather),
            _call(ids[3], "call_time", "get_time", time),
        ], {
            "input_tokens": 12, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 34, "output_tokens_details": {"reasoning_tokens": 6},
            "total_tokens": 46,
        })},
    ]


def test_a_text_piece_is_one_delta_event_byte_for_byte() -> None:
    encoder = ResponsesFormat(model="m")
    start = encoder.piece(Piece("a"))
    item_id = json.loads(parse_sse(start)[2].data)["item"]["id"]
    assert encoder.piece(Piece('你"\n👩\u200d', tokens=2)) == (
        b"event: response.output_text.delta\ndata: "
        b'{"type":"response.output_text.delta","sequence_number":5,"item_id":"'
        + item_id.encode() + b'","output_index":0,"content_index":0,"delta":"'
        + '你\\"\\n👩\u200d'.encode() + b'","logprobs":[]}\n\n'
    )


def test_an_interleaved_upstream_order() -> None:
    events = _events(_encode(_interleaved()))
    ids = Ids(events)
    assert events[2:-1] == [
        *_message_events(ids, 0, ["Hi"]),
        *_reasoning_events(ids, 1, ["hmm"]),
        *_message_events(ids, 2, [" 你", "好"]),
        _call_added(ids, 3, "call_weather", "get_weather"),
        _arguments_delta(ids, 3, '{"city":'),
        *_call_done(ids, 3, "call_weather", "get_weather", '{"city":'),
        _call_added(ids, 4, "call_time", "get_time"),
        _arguments_delta(ids, 4, '{"zone":"UTC"}'),
        _arguments_delta(ids, 3, '"東京"}'),  # a late fragment, on its own item
        *_call_done(ids, 4, "call_time", "get_time", '{"zone":"UTC"}'),
    ]
    completed = events[-1]["response"]
    assert completed["output"][3] == _call(ids[3], "call_weather", "get_weather",
                                           '{"city":"東京"}')


def test_max_output_tokens_leaves_the_cut_item_incomplete() -> None:
    events = _events(_encode([Piece("Hel"), Piece("lo"), Finish("length"), Usage(1, 2)]))
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"
    assert events[-2]["item"]["status"] == "incomplete"


def test_reasoning_cut_by_max_output_tokens_marks_its_summary_part_incomplete() -> None:
    events = _events(_encode([ReasoningDelta("Thin"), Finish("length"), Usage(1, 1)]))
    part_done = next(e for e in events if e["type"] == "response.reasoning_summary_part.done")
    assert part_done["status"] == "incomplete"
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["reasoning"]


def test_an_empty_reply_is_an_empty_message() -> None:
    events = _events(_encode([Finish("stop"), Usage(1, 0)]))
    assert events[-1]["response"]["output"][0]["content"] == [
        {"type": "output_text", "text": "", "annotations": []}
    ]


def test_a_call_without_an_id_gets_one_and_a_delta_without_a_call_is_left_out() -> None:
    events = _events(_encode([ToolCallDelta(5, "{}"), ToolCallStart(0, "", "f")]))
    assert [event["type"] for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    assert re.fullmatch(r"call_[0-9a-f]{24}", events[2]["item"]["call_id"])


def test_a_calls_item_is_done_at_its_end_not_later() -> None:
    encoder = ResponsesFormat(model="m")
    encoder.event(ToolCallStart(0, "call_a", "f"))
    encoder.event(ToolCallDelta(0, "{}"))
    assert encoder.event(ToolCallEnd(1)) == b""  # not the open call
    assert [event["type"] for event in _events_from(encoder.event(ToolCallEnd(0)))] == [
        "response.function_call_arguments.done", "response.output_item.done"
    ]
    assert encoder.event(ToolCallEnd(0)) == b""


def _events_from(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in parse_sse(body)]


# -- the official SDK as the judge ---------------------------------------------------------


def _sdk(body: bytes, content_type: str) -> OpenAI:
    client = canned_client(body, content_type=content_type, path="/v1/responses")
    return OpenAI(api_key="test", base_url="http://tokenstream.test/v1", max_retries=0,
                  http_client=client)


def _final_response(items: Sequence[Item]) -> Any:
    with _sdk(_encode(items), "text/event-stream") as client, client.responses.stream(
        model="gpt-test", input="hi"
    ) as stream:
        for _ in stream:
            pass
        return stream.get_final_response()


def test_the_stream_helper_gives_reasoning_message_and_function_calls() -> None:
    final = _final_response(_in_engine_order())
    assert [item.type for item in final.output] == [
        "reasoning", "message", "function_call", "function_call"
    ]
    reasoning, message, weather, time = final.output
    assert isinstance(reasoning, ResponseReasoningItem)
    assert [part.text for part in reasoning.summary] == [REASONING]
    assert isinstance(message, ResponseOutputMessage)
    assert final.output_text == TEXT
    assert isinstance(weather, ResponseFunctionToolCall)
    assert (weather.call_id, weather.name, weather.arguments) == (
        "call_weather", "get_weather", "".join(WEATHER_ARGUMENTS)
    )
    assert json.loads(weather.arguments) == {"city": "東京", "days": [1, 2]}
    assert (time.call_id, time.name, time.arguments) == (
        "call_time", "get_time", '{"zone":"Asia/Tokyo"}'
    )
    assert final.status == "completed"
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == 6


def test_the_stream_helper_takes_an_interleaved_upstream_order() -> None:
    final = _final_response(_interleaved())
    assert [item.type for item in final.output] == [
        "message", "reasoning", "message", "function_call", "function_call"
    ]
    assert final.output_text == "Hi 你好"
    assert final.output[3].arguments == '{"city":"東京"}'
    assert final.output[4].arguments == '{"zone":"UTC"}'


def test_raw_stream_events_parse_into_the_sdks_types() -> None:
    with _sdk(_encode(_in_engine_order()), "text/event-stream") as client:
        events = list(client.responses.create(model="gpt-test", input="hi", stream=True))
    summary = [e for e in events if isinstance(e, ResponseReasoningSummaryTextDeltaEvent)]
    text = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    arguments = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    assert [e.delta for e in summary] == REASONING_PIECES
    assert [e.delta for e in text] == TEXT_PIECES
    assert [e.delta for e in arguments] == WEATHER_ARGUMENTS + TIME_ARGUMENTS
    assert [e.output_index for e in arguments] == [2] * 7 + [3] * 3
    assert events[-1].type == "response.completed"


def test_a_whole_response_with_every_kind_of_item() -> None:
    content = ReplyContent(
        text=TEXT,
        reasoning=REASONING,
        tool_calls=[ToolCall("call_weather", "get_weather", '{"city":"東京"}', 0)],
        finish_reason="tool_calls",
    )
    body = json.dumps(response_body("gpt-test", content, Usage(7, 9))).encode()
    with _sdk(body, "application/json") as client:
        response = client.responses.create(model="gpt-test", input="hi")
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    reasoning, _, call = response.output
    assert isinstance(reasoning, ResponseReasoningItem)
    assert reasoning.summary[0].text == REASONING
    assert response.output_text == TEXT
    assert isinstance(call, ResponseFunctionToolCall)
    assert (call.call_id, call.name, call.arguments) == (
        "call_weather", "get_weather", '{"city":"東京"}'
    )
    assert response.status == "completed"


def test_a_whole_response_of_calls_only_has_no_message() -> None:
    content = ReplyContent(tool_calls=[ToolCall("c", "f", "{}")], finish_reason="tool_calls")
    body = response_body("m", content, Usage(1, 1))
    assert [item["type"] for item in body["output"]] == ["function_call"]


def test_a_whole_response_cut_by_max_output_tokens() -> None:
    body = response_body("m", ReplyContent(text="Hel", finish_reason="length"), Usage(1, 1))
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"


# -- requests ------------------------------------------------------------------------------


def _parse(items: Any) -> list[ChatMessage]:
    return parse_responses(json.dumps({"model": "m", "input": items}).encode()).messages


def test_input_items_of_a_conversation_with_a_function_call() -> None:
    messages = _parse([
        {"role": "user", "content": "weather in 東京?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}],
         "encrypted_content": "xyz"},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"東京"}', "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "晴れ 👩‍👩‍👧‍👦"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "no "}, {"type": "input_image"},
                    {"type": "input_text", "text": "data"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "and tomorrow?"}]},
    ])
    assert messages == [
        ChatMessage("user", "weather in 東京?"),
        ChatMessage("assistant", "", tool_calls=(
            ToolCall("call_1", "get_weather", '{"city":"東京"}', 0),
        )),
        ChatMessage("tool", "晴れ 👩‍👩‍👧‍👦", tool_call_id="call_1"),
        ChatMessage("tool", "no data", tool_call_id="call_2"),
        ChatMessage("assistant", "Sunny."),
        ChatMessage("user", "and tomorrow?"),
    ]


def test_a_string_input_is_one_user_message() -> None:
    assert _parse("hi") == [ChatMessage("user", "hi")]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "function_call_output", "output": "x"},
         "input.0.function_call_output.call_id"),
        ({"type": "function_call", "call_id": "c", "name": "f"},
         "input.0.function_call.arguments"),
        ({"type": "web_search_call", "id": "ws_1"}, "input.0"),
        ({"role": "user", "content": [{"text": "no type"}]}, "input.0.message.content.0.type"),
        ("just a string", "input.0"),
    ],
)
def test_malformed_input_items_are_refused_naming_them(item: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _parse([item])
    assert refused.value.status == 400
    assert refused.value.param == param
