from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenstream.dialects.openai_chat import OpenAIChunkFormat
from tokenstream.dialects.stream_query import JsonFormat, TextFormat
from tokenstream.engine.events import Finish, ReplyEncoder, Usage
from tokenstream.engine.tokenizer import Piece
from tokenstream.sse.parser import SSEDecoder


def _finish(wire: ReplyEncoder, reason: str, usage: Usage | None) -> bytes:
    """A complete reply's closing events and ending, as the runner writes them."""
    closing = [Finish(reason)] if usage is None else [Finish(reason), usage]
    return b"".join(wire.event(event) for event in closing) + wire.end()


def _events(raw: bytes) -> list[tuple[str, str, str]]:
    decoder = SSEDecoder()
    return [(e.event, e.id, e.data) for e in decoder.feed(raw) + decoder.close()]


def test_openai_chunks_have_openai_shape() -> None:
    wire = OpenAIChunkFormat(model="m", include_usage=True, completion_id="chatcmpl-1", created=5)
    raw = wire.piece(Piece(" hi\n")) + wire.piece(Piece("你", 2))
    raw += _finish(wire, "length", Usage(prompt_tokens=7, completion_tokens=3))
    events = _events(raw)
    assert events[-1][2] == "[DONE]"
    chunks = [json.loads(data) for _, _, data in events[:-1]]
    for chunk in chunks:
        assert chunk["id"] == "chatcmpl-1"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == 5
        assert chunk["model"] == "m"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:3]] == [" hi\n", "你"]
    assert chunks[3]["choices"][0] == {
        "index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"
    }
    assert all(c["usage"] is None for c in chunks[:4])
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_openai_without_usage_has_no_usage_key_and_empty_reply_still_sends_role() -> None:
    wire = OpenAIChunkFormat(model="m", include_usage=False)
    events = _events(_finish(wire, "stop", Usage(1, 0)))
    chunks = [json.loads(data) for _, _, data in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


def test_openai_keeps_carriage_returns_inside_json() -> None:
    wire = OpenAIChunkFormat(model="m", include_usage=False)
    events = _events(wire.piece(Piece("a\r\nb\rc")))
    assert json.loads(events[1][2])["choices"][0]["delta"]["content"] == "a\r\nb\rc"


def test_text_format_event_names_and_sentinel() -> None:
    wire = TextFormat(event="custom", sentinel="[DONE]")
    raw = wire.piece(Piece(" a")) + wire.piece(Piece("\n\n")) + _finish(wire, "stop", None)
    assert _events(raw) == [
        ("custom", "", " a"),
        ("custom", "", "\n\n"),
        ("custom", "", "[DONE]"),
    ]


def test_json_format_objects() -> None:
    wire = JsonFormat(event=None, sentinel="END")
    raw = wire.piece(Piece("x")) + wire.piece(Piece("懒", 3)) + _finish(wire, "stop", None)
    events = _events(raw)
    assert [json.loads(d) for _, _, d in events[:-1]] == [
        {"index": 0, "token": "x", "tokens": 1},
        {"index": 1, "token": "懒", "tokens": 3},
    ]
    assert events[-1] == ("message", "", "END")


def test_error_event_in_openai_shape_then_sentinel() -> None:
    wire = TextFormat(event=None, sentinel="[DONE]")
    events = _events(wire.error("upstream went away", "upstream_error", "upstream_closed"))
    assert json.loads(events[0][2]) == {
        "error": {
            "message": "upstream went away",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_closed",
        }
    }
    assert events[1][2] == "[DONE]"


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(),
    event=st.one_of(st.none(), st.sampled_from(["token", "message", "x y"])),
)
def test_the_json_fast_path_frames_exactly_as_the_encoder(
    text: str, event: str | None
) -> None:
    fast = OpenAIChunkFormat(model="m", include_usage=False, event=event,
                             completion_id="chatcmpl-x", created=1)
    slow = OpenAIChunkFormat(model="m", include_usage=False, event=event,
                             completion_id="chatcmpl-x", created=1)
    slow.piece(Piece("warm-up"))  # both past their role chunk
    fast.piece(Piece("warm-up"))
    head = fast._content_head.decode()
    tail = fast._content_tail.decode()
    expected = slow.frame(head + json.dumps(text, ensure_ascii=False) + tail)
    assert fast.piece(Piece(text)) == expected
