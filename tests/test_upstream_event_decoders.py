"""The Responses and Anthropic stream decoders: bytes in, typed reply events out, pure.

The cases are data (``vectors/upstream_events.json``); each is decoded whole, one byte at a
time, and (``split_everywhere``) cut in two at every byte: multi-byte characters and events
split across reads give the same events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokenstream.config import UpstreamDialect
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
from tokenstream.sources.event_stream import StreamDecoder
from tokenstream.sources.upstream.wire import decoder_for

from upstream_support import Script, anthropic_stream, responses_stream

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "upstream_events.json").read_text(encoding="utf-8")
)["cases"]
KEY = "sk-ant-secret-0123456789"


def _decoder(dialect: UpstreamDialect, max_event_chars: int = 1 << 20) -> StreamDecoder:
    return decoder_for(dialect, (KEY,), max_event_chars)


def _as_data(item: ReplyEvent) -> list[Any]:
    if isinstance(item, TextDelta):
        return ["text", item.text]
    if isinstance(item, ReasoningDelta):
        return ["reasoning", item.text]
    if isinstance(item, ToolCallStart):
        return ["call_start", item.index, item.call_id, item.name]
    if isinstance(item, ToolCallDelta):
        return ["call_delta", item.index, item.arguments]
    if isinstance(item, ToolCallEnd):
        return ["call_end", item.index]
    if isinstance(item, Finish):
        return ["finish", item.reason]
    if isinstance(item, Usage):
        assert item.raw is None  # not in chat completions' shape: not forwarded as is
        return ["usage", item.prompt_tokens, item.completion_tokens]
    if isinstance(item, ModelName):
        return ["model", item.name]
    if isinstance(item, Passthrough):
        return ["passthrough", dict(item.delta)]
    raise AssertionError(f"unexpected item {item!r}")


def _joined(items: list[ReplyEvent]) -> list[list[Any]]:
    """Adjacent text, reasoning, and fragments of one call's arguments joined."""
    out: list[list[Any]] = []
    for item in items:
        data = _as_data(item)
        last = out[-1] if out else None
        if last and last[0] == data[0] and data[0] in ("text", "reasoning"):
            last[1] += data[1]
        elif last and last[0] == data[0] == "call_delta" and last[1] == data[1]:
            last[2] += data[2]
        else:
            out.append(data)
    return out


def _decode(case: dict[str, Any], parts: list[bytes]) -> tuple[list[list[Any]], StreamDecoder]:
    decoder = _decoder(case["dialect"])
    items: list[ReplyEvent] = []
    for part in parts:
        items += decoder.feed(part)
    items += decoder.close()
    return _joined(items), decoder


def _check(case: dict[str, Any], parts: list[bytes], where: str) -> None:
    items, decoder = _decode(case, parts)
    assert items == case["items"], where
    assert decoder.prompt_tokens == case["prompt_tokens"], where
    error = case["error"]
    if error is None:
        assert decoder.error is None, where
    else:
        assert decoder.error is not None, where
        assert (decoder.error.code, decoder.error.error_type, decoder.error.message) == (
            error["code"], error["type"], error["message"]
        ), where


@pytest.mark.parametrize("case", VECTORS, ids=[case["id"] for case in VECTORS])
def test_vector(case: dict[str, Any]) -> None:
    raw = case["stream"].encode("utf-8")
    _check(case, [raw], "whole")
    _check(case, [raw[i : i + 1] for i in range(len(raw))], "one byte at a time")
    if case.get("split_everywhere"):
        for cut in range(len(raw) + 1):
            _check(case, [raw[:cut], raw[cut:]], f"cut at byte {cut}")


@pytest.mark.parametrize("dialect", ["openai-responses", "anthropic"])
def test_nothing_is_read_after_the_last_event(dialect: UpstreamDialect) -> None:
    build = responses_stream if dialect == "openai-responses" else anthropic_stream
    raw = b"".join(build(Script(text=["ok"])))
    decoder = _decoder(dialect)
    items = decoder.feed(raw + b"data: {\"type\": \"later\"}\n\n")
    assert decoder.done and decoder.error is None
    assert decoder.feed(b"event: error\ndata: {}\n\n") == []
    assert decoder.close() == [] and decoder.error is None
    assert _joined(items)[-2:] == [["finish", "stop"], ["usage", 25, 18]]


@pytest.mark.parametrize("dialect", ["openai-responses", "anthropic"])
@pytest.mark.parametrize(
    "data,code",
    [("not json", "upstream_bad_event"), ("[1, 2]", "upstream_bad_event")],
)
def test_a_broken_event_ends_the_reply(dialect: UpstreamDialect, data: str, code: str) -> None:
    decoder = _decoder(dialect)
    assert decoder.feed(f"event: x\ndata: {data}\n\n".encode()) == []
    assert decoder.error is not None and decoder.error.code == code


@pytest.mark.parametrize("dialect", ["openai-responses", "anthropic"])
def test_an_event_longer_than_the_limit_ends_the_reply(dialect: UpstreamDialect) -> None:
    decoder = _decoder(dialect, max_event_chars=1024)
    decoder.feed(b"data: " + b"x" * 2000)
    assert decoder.error is not None
    assert decoder.error.code == "upstream_bad_event"
    assert "upstream.max_event_chars" in decoder.error.message


def test_the_key_is_redacted_from_the_upstreams_error_text() -> None:
    anthropic = _decoder("anthropic")
    anthropic.feed(
        b'event: error\ndata: {"type":"error","error":{"type":"authentication_error",'
        b'"message":"bad key ' + KEY.encode() + b'"}}\n\n'
    )
    responses = _decoder("openai-responses")
    responses.feed(b"data: not json " + KEY.encode() + b"\n\n")
    for decoder in (anthropic, responses):
        assert decoder.error is not None
        assert KEY not in decoder.error.message and "[redacted]" in decoder.error.message
