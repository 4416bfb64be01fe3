"""``GET /v1/stream?dialect=...``: the scripted reply in each API's own events, and the one
table of dialects (``dialects.catalog``) behind it, ``GET /v1/dialects`` and the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from tokenstream.dialects.anthropic_messages import AnthropicMessagesFormat
from tokenstream.dialects.catalog import DIALECTS
from tokenstream.dialects.stream_query import encoder_for, parse_stream_query, prompt_counted
from tokenstream.sse.parser import ServerSentEvent

from support import MakeClient, canned_async_client, parse_sse, scripted_reply

CHINESE = scripted_reply("chinese")
EMOJI = scripted_reply("emoji")
INSTANT = {"profile": "instant"}


def _body(dialect: str, prompt: str) -> dict[str, Any]:
    """The streamed request for ``prompt`` at the dialect's own endpoint."""
    message = {"role": "user", "content": prompt}
    ui_message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": prompt}]}
    common = {"model": "tokenstream-1", "stream": True, "tokenstream": INSTANT}
    return {
        "openai-chat": {"messages": [message], "stream_options": {"include_usage": True}},
        "openai-responses": {"input": prompt},
        "anthropic": {"messages": [message], "max_tokens": 4096},
        "ai-sdk-ui": {"messages": [ui_message]},
    }[dialect] | common


def _text(dialect: str, events: list[ServerSentEvent]) -> str:
    """The reply text, read the way each API documents its text deltas."""
    text = ""
    for event in events:
        if event.data == "[DONE]":
            continue
        data = json.loads(event.data)
        if dialect == "openai-chat":
            text += "".join(c["delta"].get("content") or "" for c in data["choices"])
        elif dialect == "anthropic" and data["type"] == "content_block_delta":
            text += data["delta"]["text"]
        elif data["type"] == {"openai-responses": "response.output_text.delta",
                              "ai-sdk-ui": "text-delta"}.get(dialect):
            text += data["delta"]
    return text


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize(
    ("prompt", "reply"), [("chinese", CHINESE), ("emoji", EMOJI)], ids=["chinese", "emoji"]
)
async def test_the_stream_is_the_dialects_own_events(
    make_client: MakeClient, dialect: str, prompt: str, reply: str
) -> None:
    """The same events, in the same order, as the dialect's own endpoint streams; the text
    byte for byte."""
    client = await make_client()
    # the chat body asks for the usage chunk
    usage = {"include_usage": "true"} if DIALECTS[dialect].custom_framing else {}
    got = await client.get(
        "/v1/stream", params={"prompt": prompt, "dialect": dialect, **usage, **INSTANT}
    )
    assert got.status == 200
    assert got.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    events = parse_sse(await got.read())
    posted = await client.post(
        DIALECTS[dialect].path,
        json=_body(dialect, prompt),
    )
    assert posted.status == 200
    own = parse_sse(await posted.read())
    assert [e.event for e in events] == [e.event for e in own]
    assert _text(dialect, events) == reply
    assert _text(dialect, own) == reply
    # every event has the stream's id and its number (a reconnect resumes after it)
    stream_id = got.headers["X-Tokenstream-Stream-Id"]
    assert [e.id for e in events] == [f"{stream_id}:{i}" for i in range(1, len(events) + 1)]


@pytest.mark.parametrize("dialect", ["openai-responses", "anthropic"])
async def test_a_dialect_with_its_own_events_gains_only_the_id_lines(
    make_client: MakeClient, dialect: str
) -> None:
    client = await make_client()
    got = await client.get("/v1/stream", params={"prompt": "hi", "dialect": dialect, **INSTANT})
    stream_id = got.headers["X-Tokenstream-Stream-Id"].encode()
    events = (await got.read()).split(b"\n\n")[:-1]
    for number, event in enumerate(events, 1):
        id_line, rest = event.split(b"\n", 1)
        assert id_line == b"id: %b:%d" % (stream_id, number)
        assert rest.startswith(b"event: ") and b"id: " not in rest


async def test_format_openai_and_dialect_openai_chat_are_the_same(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    shapes = []
    for params in ({"format": "openai"}, {"dialect": "openai-chat"},
                   {"format": "openai", "dialect": "openai-chat"}):
        got = await client.get(
            "/v1/stream",
            params={"prompt": "emoji", "event": "tok", "include_usage": "true", **params,
                    **INSTANT},
        )
        assert got.status == 200, await got.text()
        events = parse_sse(await got.read())
        assert {e.event for e in events} == {"tok"}
        assert events[-1].data == "[DONE]"
        assert json.loads(events[-2].data)["usage"]["completion_tokens"] > 0
        shapes.append([(e.id.split(":")[-1], list(json.loads(e.data)) if e.data[0] == "{"
                        else e.data) for e in events])
    assert shapes[0] == shapes[1] == shapes[2]


async def test_anthropic_message_start_counts_the_prompt(make_client: MakeClient) -> None:
    client = await make_client()
    got = await client.get("/v1/stream",
                           params={"prompt": "hello there", "dialect": "anthropic", **INSTANT})
    start = json.loads(parse_sse(await got.read())[0].data)
    posted = await client.post("/v1/messages", json={
        "model": "tokenstream-1", "max_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "hello there"}],
    })
    own_start = json.loads(parse_sse(await posted.read())[0].data)
    assert start["message"]["usage"]["input_tokens"] > 0
    assert start["message"]["usage"] == own_start["message"]["usage"]


@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"dialect": "klingon"}, "dialect",
         ["'klingon'", "'openai-chat'", "'openai-responses'", "'anthropic'"]),
        ({"dialect": "anthropic", "format": "json"}, "format", ["dialect=anthropic", "not both"]),
        ({"dialect": "openai-chat", "format": "text"}, "format", ["not both"]),
        ({"dialect": "anthropic", "event": "x"}, "event", ["names its own events"]),
        ({"dialect": "openai-responses", "include_usage": "true"}, "include_usage",
         ["always sends usage"]),
        ({"format": "xml"}, "format", ["'text'", "'json'", "'openai'"]),
    ],
)
async def test_a_bad_combination_is_a_400_naming_the_parameter(
    make_client: MakeClient, params: dict[str, str], param: str, words: list[str]
) -> None:
    client = await make_client()
    got = await client.get("/v1/stream", params={"prompt": "hi", **params})
    assert got.status == 400
    error = (await got.json())["error"]
    assert error["param"] == param
    for word in words:
        assert word in error["message"]


async def test_head_and_the_reconnect_after_the_end(make_client: MakeClient) -> None:
    client = await make_client()
    head = await client.head("/v1/stream", params={"prompt": "hi", "dialect": "anthropic"})
    assert head.status == 200
    again = await client.get("/v1/stream", params={"prompt": "hi", "dialect": "anthropic"},
                             headers={"Last-Event-ID": "done"})
    assert again.status == 204


async def test_dialects_lists_the_table(make_client: MakeClient) -> None:
    client = await make_client()
    listed = await (await client.get("/v1/dialects")).json()
    assert listed["data"] == [
        {"name": d.name, "title": d.title, "path": d.path} for d in DIALECTS.values()
    ]
    assert {"name": "anthropic", "title": "Anthropic Messages", "path": "/v1/messages"} in (
        listed["data"]
    )


def _encoder(params: dict[str, str]) -> Any:
    query = parse_stream_query({"prompt": "p", **params}, ["prompt", *params])
    return encoder_for(query, "m", "[DONE]")


def test_the_anthropic_encoder_gets_the_prompt_count() -> None:
    encoder = _encoder({"dialect": "anthropic"})
    counted = prompt_counted(encoder)
    assert isinstance(counted, AnthropicMessagesFormat)
    assert prompt_counted(_encoder({"dialect": "openai-responses"})) is None
    assert prompt_counted(_encoder({"format": "json"})) is None


# -- the official SDKs read /v1/stream's bytes as they read their own endpoint's ----------


async def _stream_bytes(make_client: MakeClient, dialect: str, prompt: str) -> bytes:
    client = await make_client()
    got = await client.get("/v1/stream", params={"prompt": prompt, "dialect": dialect, **INSTANT})
    assert got.status == 200
    return await got.read()


async def test_the_anthropic_sdk_reads_the_stream(make_client: MakeClient) -> None:
    body = await _stream_bytes(make_client, "anthropic", "emoji")
    sdk = AsyncAnthropic(api_key="x", base_url="http://t", http_client=canned_async_client(body))
    async with sdk.messages.stream(
        model="tokenstream-1", max_tokens=100, messages=[{"role": "user", "content": "emoji"}]
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == EMOJI
    assert final.stop_reason == "end_turn"


async def test_the_openai_sdk_reads_the_responses_stream(make_client: MakeClient) -> None:
    body = await _stream_bytes(make_client, "openai-responses", "chinese")
    sdk = AsyncOpenAI(api_key="x", base_url="http://t", http_client=canned_async_client(body))
    async with sdk.responses.stream(model="tokenstream-1", input="chinese") as stream:
        final = await stream.get_final_response()
    assert final.output_text == CHINESE
    assert final.status == "completed"


async def test_the_openai_sdk_reads_the_chat_stream(make_client: MakeClient) -> None:
    body = await _stream_bytes(make_client, "openai-chat", "chinese")
    sdk = AsyncOpenAI(api_key="x", base_url="http://t", http_client=canned_async_client(body))
    stream = await sdk.chat.completions.create(
        model="tokenstream-1", messages=[{"role": "user", "content": "chinese"}], stream=True
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                    if chunk.choices])
    assert text == CHINESE
