"""ChunkDecoder: an upstream's streamed bytes -> text deltas and passthrough items, pure."""

from __future__ import annotations

import json

import pytest

from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.sources.openai_chunks import ChunkDecoder

from upstream_support import DONE, UPSTREAM_MODEL, chunk, reply_stream, sse, usage_chunk

# Chinese, emoji (skin tone, ZWJ family, flag), CRLF pairs and a lone CR.
REPLY = "你好，世界！Hi 👋🏽 family: 👩‍👩‍👧‍👦 🇯🇵\r\nline two\r\n\r\nend\rok 我懒得写"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding())


def _decode(parts: list[bytes]) -> list[ReplyEvent]:
    decoder = ChunkDecoder()
    items: list[ReplyEvent] = []
    for part in parts:
        items += decoder.feed(part)
    items += decoder.close()
    assert decoder.error is None
    return items


def _text(items: list[ReplyEvent]) -> str:
    return "".join(item.text for item in items if isinstance(item, TextDelta))


def _pieces_text(tokenizer: Tokenizer, items: list[ReplyEvent]) -> tuple[str, list[str]]:
    incremental = tokenizer.incremental()
    pieces = []
    for item in items:
        if isinstance(item, TextDelta):
            pieces += incremental.feed(item.text)
    pieces += incremental.flush()
    return "".join(p.text for p in pieces), [p.text for p in pieces]


def test_every_byte_split_of_the_stream_gives_the_exact_text(tokenizer: Tokenizer) -> None:
    deltas = [REPLY[i : i + 3] for i in range(0, len(REPLY), 3)]
    raw = reply_stream(deltas)
    whole = [p.text for p in tokenizer.pieces(REPLY)]
    for cut in range(len(raw) + 1):
        items = _decode([raw[:cut], raw[cut:]])
        assert _text(items) == REPLY, f"split at byte {cut}"
    # and through the incremental tokenizer, the pieces are those of the whole text
    text, pieces = _pieces_text(tokenizer, _decode([raw[i : i + 1] for i in range(len(raw))]))
    assert text == REPLY
    assert pieces == whole
    assert "\ufffd" not in text


def test_every_delta_split_gives_the_whole_text_tokenization(tokenizer: Tokenizer) -> None:
    """Two content deltas split at every UTF-16 unit: JSON may even split a surrogate pair."""
    whole = [p.text for p in tokenizer.pieces(REPLY)]
    units = REPLY.encode("utf-16-le")
    for cut in range(0, len(units) + 1, 2):
        first = units[:cut].decode("utf-16-le", "surrogatepass")
        second = units[cut:].decode("utf-16-le", "surrogatepass")
        # ensure_ascii writes \\uXXXX escapes, so a lone surrogate survives into the JSON
        raw = sse(chunk(role=True)) + b"".join(
            sse(chunk(part), ensure_ascii=True) for part in (first, second) if part
        )
        items = _decode([raw + sse(chunk(finish="stop")) + DONE])
        text, pieces = _pieces_text(tokenizer, items)
        assert text == REPLY, f"split at UTF-16 unit {cut // 2}"
        assert pieces == whole, f"split at UTF-16 unit {cut // 2}"


def test_passthrough_items_in_order() -> None:
    tool_start = {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    tool_args = {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]}
    raw = (
        sse(chunk(role=True))
        + sse(chunk("Let me check."))
        + sse(chunk(delta={"content": None, **tool_start}))
        + sse(chunk(delta=tool_args))
        + sse(chunk(finish="tool_calls"))
        + sse(usage_chunk(12, 7))
        + DONE
    )
    assert _decode([raw]) == [
        ModelName(UPSTREAM_MODEL),
        TextDelta("Let me check."),
        ToolCallStart(0, "call_1", "get_weather"),
        ToolCallDelta(0, '{"city":"Paris"}'),
        ToolCallEnd(0),
        Finish("tool_calls"),
        Usage(12, 7),
    ]


def test_refusal_and_other_delta_fields_pass_through_but_role_and_nulls_do_not() -> None:
    raw = (
        sse(chunk(role=True))  # role + content "" + refusal null: nothing to forward
        + sse(chunk(delta={"refusal": "I can't"}))
        + sse(chunk(delta={"reasoning_content": "thinking", "content": "ok"}))
        + sse(chunk(finish="stop"))
        + DONE
    )
    assert _decode([raw]) == [
        ModelName(UPSTREAM_MODEL),
        Passthrough({"refusal": "I can't"}),
        TextDelta("ok"),
        ReasoningDelta("thinking"),
        Finish("stop"),
    ]


def test_tool_calls_in_a_shape_the_model_does_not_type_pass_through_unchanged() -> None:
    custom = {"tool_calls": [{"index": 0, "type": "code_interpreter", "input": "1+1"}]}
    raw = sse(chunk(delta=custom)) + sse(chunk(finish="tool_calls")) + DONE
    assert _decode([raw]) == [ModelName(UPSTREAM_MODEL), Passthrough(custom), Finish("tool_calls")]


def test_model_is_announced_once_and_again_when_it_changes() -> None:
    raw = (
        sse(chunk("a"))
        + sse(chunk("b"))
        + sse(chunk("c", model="other"))
        + sse(chunk(finish="stop", model="other"))
        + DONE
    )
    models = [i.name for i in _decode([raw]) if isinstance(i, ModelName)]
    assert models == [UPSTREAM_MODEL, "other"]


def test_comments_and_other_choices_are_ignored_and_nothing_is_read_after_done() -> None:
    other = chunk("not me")
    other["choices"][0]["index"] = 1
    raw = b": keep-alive\n\n" + sse(chunk("me")) + sse(other) + DONE + sse(chunk("late"))
    assert _text(_decode([raw])) == "me"


def test_in_stream_error_comes_after_the_text_before_it_and_stops_decoding() -> None:
    decoder = ChunkDecoder()
    error = {"error": {"message": "overloaded", "type": "server_error", "code": 503}}
    items = decoder.feed(sse(chunk("partial")) + sse(error) + sse(chunk("never")))
    assert items == [ModelName(UPSTREAM_MODEL), TextDelta("partial")]
    assert decoder.error is not None
    assert (decoder.error.message, decoder.error.error_type, decoder.error.code) == (
        "overloaded",
        "server_error",
        "503",
    )
    assert decoder.feed(sse(chunk("later"))) == []
    assert decoder.close() == []


def test_error_text_is_redacted() -> None:
    decoder = ChunkDecoder(secrets=("sk-secret-123",))
    decoder.feed(sse({"error": {"message": "bad key sk-secret-123"}}))
    assert decoder.error is not None
    assert "sk-secret-123" not in decoder.error.message
    decoder = ChunkDecoder(secrets=("sk-secret-123",))
    decoder.feed(b"data: oops sk-secret-123\n\n")
    assert decoder.error is not None
    assert "sk-secret-123" not in decoder.error.message
    assert decoder.error.code == "upstream_bad_event"


@pytest.mark.parametrize(
    "raw",
    [
        sse(chunk("cut short")),  # no finish reason, no [DONE]
        sse(chunk("cut short")) + b"data: {\"choices\": []}",  # and an unterminated event
    ],
)
def test_stream_ending_before_the_reply_is_complete_is_an_error(raw: bytes) -> None:
    decoder = ChunkDecoder()
    decoder.feed(raw)
    decoder.close()
    assert decoder.error is not None
    assert decoder.error.code == "upstream_disconnected"


def test_finish_reason_without_done_is_a_complete_reply() -> None:
    items = _decode([sse(chunk("all")) + sse(chunk(finish="length"))])
    assert items[-1] == Finish("length")


def test_lone_surrogate_becomes_replacement_character() -> None:
    raw = b'data: {"choices":[{"index":0,"delta":{"content":"a\\ud83d"}}]}\n\n'
    raw += b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}\n\n'
    text = _text(_decode([raw + DONE]))
    assert text == "a\ufffdb"
    json.dumps(text).encode("utf-8")  # encodable: no surrogate left


def test_a_line_without_an_end_is_an_error_at_the_limit_not_a_growing_buffer() -> None:
    decoder = ChunkDecoder(max_event_chars=1000)
    assert decoder.feed(sse(chunk("ok"))) == [ModelName(UPSTREAM_MODEL), TextDelta("ok")]
    assert decoder.feed(b"data: " + b"x" * 900) == []
    assert decoder.error is None  # 906 characters: within the limit
    assert decoder.feed(b"x" * 100) == []
    assert decoder.error is not None and decoder.error.code == "upstream_bad_event"
    assert "upstream.max_event_chars" in decoder.error.message
    assert decoder.feed(b"\n\n" + sse(chunk("never"))) == []  # nothing is read after it
