"""Every endpoint end to end through aiohttp's test client, with an instant fake clock."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from tokenstream.config import Config, ResumeConfig
from tokenstream.engine.pacer import PacingProfile
from tokenstream.server.app import STATE

from support import MakeClient, ManualClock, parse_sse, scripted_reply, wait_for

CHINESE = scripted_reply("chinese")
EMOJI = scripted_reply("emoji")
CODE = scripted_reply("code")
HELLO = scripted_reply("hello")


def _openai_text(events: list[Any]) -> str:
    text = ""
    for event in events:
        if event.data == "[DONE]":
            break
        chunk = json.loads(event.data)
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize(
    "prompt,reply", [("hello", HELLO), ("chinese", CHINESE), ("emoji", EMOJI), ("code", CODE)]
)
@pytest.mark.parametrize("fmt", ["text", "json", "openai"])
async def test_stream_reassembles_exactly(
    make_client: MakeClient, prompt: str, reply: str, fmt: str
) -> None:
    client = await make_client()
    response = await client.get("/v1/stream", params={"prompt": prompt, "format": fmt})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in response.headers
    events = parse_sse(await response.read())
    assert events[-1].data == "[DONE]"
    stream_id = response.headers["X-Tokenstream-Stream-Id"]
    assert [e.id for e in events] == [f"{stream_id}:{i}" for i in range(1, len(events) + 1)]
    body = events[:-1]
    if fmt == "text":
        text = "".join(e.data for e in body)
    elif fmt == "json":
        text = "".join(json.loads(e.data)["token"] for e in body)
    else:
        text = _openai_text(body)
    assert text == reply
    assert "\ufffd" not in text


async def test_head_answers_the_stream_headers_without_a_body(make_client: MakeClient) -> None:
    client = await make_client()
    head = await client.head("/v1/stream", params={"prompt": "hi"})
    assert head.status == 200
    assert head.headers["Content-Type"].startswith("text/event-stream")
    bad = await client.head("/v1/stream", params={"prompt": "hi", "tokens_per_second": "-1"})
    assert bad.status == 400
    # on one keep-alive connection: the GET's answer follows the HEAD's headers at once
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"HEAD /v1/stream?prompt=hi HTTP/1.1\r\nHost: t\r\n\r\n"
                 b"GET /v1/stream?prompt=hi&tokens_per_second=0 HTTP/1.1\r\nHost: t\r\n"
                 b"Connection: close\r\n\r\n")
    received = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_part, _, rest = received.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 200 OK")
    assert rest.startswith(b"HTTP/1.1 200 OK"), rest[:80]
    assert b"data: [DONE]" in rest


async def test_stream_named_event(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/v1/stream", params={"prompt": "hi", "event": "custom"})
    events = parse_sse(await response.read())
    assert {e.event for e in events} == {"custom"}
    assert "".join(e.data for e in events[:-1]) == HELLO


async def test_stream_every_event_is_one_token_by_default(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/v1/stream", params={"prompt": "hello", "format": "json"})
    tokens = [json.loads(e.data)["tokens"] for e in parse_sse(await response.read())[:-1]]
    assert set(tokens) == {1}
    assert len(tokens) > 20


async def test_stream_echo_source_and_max_tokens(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get(
        "/v1/stream",
        params={"prompt": "one two three four five", "source": "echo", "max_tokens": "3"},
    )
    events = parse_sse(await response.read())
    assert "".join(e.data for e in events[:-1]) == "one two three"


async def test_reconnect_after_done_gets_204(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get(
        "/v1/stream", params={"prompt": "hi"}, headers={"Last-Event-ID": "done"}
    )
    assert response.status == 204


async def test_stream_is_paced_on_the_injected_clock(make_client: MakeClient) -> None:
    clock = ManualClock()
    config = Config(
        profiles={"p": PacingProfile(tokens_per_second=10, ttft_ms=500)}, default_profile="p"
    )
    client = await make_client(config, clock)
    response = await client.get("/v1/stream", params={"prompt": "hello world", "source": "echo"})
    assert response.status == 200
    # its next event, and its watch (heartbeats and the time limit)
    await wait_for(lambda: clock.sleepers == 2)
    clock.advance(0.499)
    assert clock.sleepers == 2  # not yet: time to first token is 500 ms
    clock.advance(0.001)
    first = await response.content.readuntil(b"\n\n")
    stream_id = response.headers["X-Tokenstream-Stream-Id"].encode()
    assert first == b"id: %b:1\ndata: hello\n\n" % stream_id
    await wait_for(lambda: clock.sleepers == 2)
    clock.advance(0.1)
    assert await response.content.readuntil(b"\n\n") == b"id: %b:2\ndata:  world\n\n" % (
        stream_id
    )
    assert parse_sse(await response.read())[-1].data == "[DONE]"


async def test_heartbeat_comment_during_long_ttft(make_client: MakeClient) -> None:
    config = Config(
        profiles={"p": PacingProfile(tokens_per_second=None, ttft_ms=40_000)},
        default_profile="p",
    )
    client = await make_client(config)  # fake clock: the 40 s pass instantly
    response = await client.get("/v1/stream", params={"prompt": "hey", "source": "echo"})
    raw = await response.read()
    assert raw.startswith(b": ping\n: ping\nid: ")  # at 15 s and 30 s, then the reply
    assert raw.count(b": ping\n") == 2
    assert [e.data for e in parse_sse(raw)] == ["hey", "[DONE]"]


async def test_client_disconnect_stops_the_stream(make_client: MakeClient) -> None:
    from tokenstream.server.app import STATE

    clock = ManualClock()
    config = Config(
        profiles={"p": PacingProfile(tokens_per_second=1, ttft_ms=0)}, default_profile="p",
        resume=ResumeConfig(enabled_scripted=False),  # (a resumable one lingers)
    )
    client = await make_client(config, clock)
    stats = client.app[STATE].stats
    response = await client.get("/v1/stream", params={"prompt": "long"})
    await response.content.readuntil(b"\n\n")
    assert stats.active == 1
    response.close()  # the client leaves mid-stream
    await wait_for(lambda: stats.active == 0)
    assert stats.disconnected == 1
    assert clock.sleepers == 0  # nothing is left waiting to send the rest


async def test_chat_completion_stream_with_usage(make_client: MakeClient) -> None:
    client = await make_client()
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "emoji"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    events = parse_sse(await response.read())
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {"gpt-4o-mini"}
    assert len({c["id"] for c in chunks}) == 1
    assert _openai_text(events) == EMOJI
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] == sum(
        1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
    ) or usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # 2 messages: 3 framing tokens each + role + content tokens, + 3 priming tokens
    assert usage["prompt_tokens"] == 3 + (3 + 1 + 2) + (3 + 1 + 1)


@pytest.mark.parametrize("spare", [0, 1, -1])
async def test_usage_counts_every_token_whether_the_reply_fits_max_tokens_or_not(
    make_client: MakeClient, spare: int
) -> None:
    """EMOJI has pieces of several tokens (characters split across tokens); a reply that fits
    ``max_tokens`` exactly, or with room, is whole; one token less cuts it."""
    client = await make_client()
    tokens = client.app[STATE].tokenizer.count(EMOJI)
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "emoji"}],
        "stream": True,
        "max_tokens": tokens + spare,
        "stream_options": {"include_usage": True},
    }
    events = parse_sse(await (await client.post("/v1/chat/completions", json=body)).read())
    chunks = [json.loads(e.data) for e in events[:-1]]
    usage = chunks[-1]["usage"]["completion_tokens"]
    if spare >= 0:
        assert (_openai_text(events), usage) == (EMOJI, tokens)
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    else:
        assert EMOJI.startswith(_openai_text(events)) and _openai_text(events) != EMOJI
        assert usage <= tokens - 1
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"


async def test_chat_completion_max_tokens_gives_length(make_client: MakeClient) -> None:
    client = await make_client()
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "max_tokens": 5,
        "stream_options": {"include_usage": True},
    }
    events = parse_sse(await (await client.post("/v1/chat/completions", json=body)).read())
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert _openai_text(events) == "Hello! I'm token"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 5


async def test_chat_completion_not_streamed(make_client: MakeClient) -> None:
    client = await make_client()
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "chinese"}]}],
        "max_completion_tokens": 1000,
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    completion = await response.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {
        "role": "assistant", "content": CHINESE, "refusal": None
    }
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] > 0


async def test_profile_from_body_and_header(make_client: MakeClient) -> None:
    clock = ManualClock()
    client = await make_client(None, clock)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tokenstream": {"profile": "instant"}}
    assert (await client.post("/v1/chat/completions", json=body)).status == 200
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"X-Tokenstream-Profile": "instant"},
    )
    assert response.status == 200  # instant: never waits on the manual clock


async def test_models_profiles_healthz(make_client: MakeClient) -> None:
    client = await make_client()
    models = await (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tokenstream-1"]
    assert (await client.get("/v1/models/tokenstream-1")).status == 200
    assert (await client.get("/v1/models/nope")).status == 404
    profiles = await (await client.get("/v1/profiles")).json()
    assert profiles["default"] == "chatgpt"
    assert profiles["profiles"]["chatgpt"]["tokens_per_second"] == 50
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok"
    assert health["active_streams"] == 0


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize(
    "body,status,param,code",
    [
        (b"{not json", 400, None, "invalid_json"),
        (b"[1, 2]", 400, None, "invalid_type"),
        (b"\xff\xfe garbage", 400, None, "invalid_json"),
        (json.dumps(_chat(bogus=1)).encode(), 400, "bogus", "unknown_parameter"),
        (json.dumps({"messages": []}).encode(), 400, "model", "missing_required_parameter"),
        (json.dumps(_chat(messages=[])).encode(), 400, "messages", "invalid_value"),
        (json.dumps(_chat(messages=[{"role": "robot", "content": "x"}])).encode(), 400,
         "messages.0.role", "invalid_value"),
        (json.dumps(_chat(stream="yes")).encode(), 400, "stream", "invalid_value"),
        (json.dumps(_chat(max_tokens=0)).encode(), 400, "max_tokens", "invalid_value"),
        (json.dumps(_chat(max_tokens=10**30)).encode(), 400, "max_tokens", "invalid_value"),
        (json.dumps(_chat(n=2)).encode(), 400, "n", "invalid_value"),
        (json.dumps(_chat(stream_options={"include_usage": True})).encode(), 400,
         "stream_options", "invalid_value"),
        (json.dumps(_chat(tokenstream={"profile": "warp"})).encode(), 400,
         "tokenstream.profile", "profile_not_found"),
        (json.dumps(_chat(tokenstream={"tokens_per_second": -5})).encode(), 400,
         "tokenstream.tokens_per_second", "invalid_value"),
        (json.dumps(_chat(tokenstream={"jitter": 99})).encode(), 400,
         "tokenstream.jitter", "invalid_value"),
        (json.dumps(_chat(tokenstream={"warp": 9})).encode(), 400,
         "tokenstream.warp", "unknown_parameter"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], '
         b'"tokenstream": {"ttft_ms": NaN}}', 400, "tokenstream.ttft_ms", "invalid_value"),
    ],
)
async def test_chat_completion_bad_input(
    make_client: MakeClient, body: bytes, status: int, param: str | None, code: str
) -> None:
    client = await make_client()
    response = await client.post(
        "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == status
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    if param:
        assert param in error["message"]
    # and the server keeps serving
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize(
    "query,param",
    [
        ({}, "prompt"),
        ({"prompt": "x", "format": "xml"}, "format"),
        ({"prompt": "x", "tokens_per_second": "fast"}, "tokens_per_second"),
        ({"prompt": "x", "tokens_per_second": "nan"}, "tokens_per_second"),
        ({"prompt": "x", "jitter": "-1"}, "jitter"),
        ({"prompt": "x", "chunk_tokens": "0"}, "chunk_tokens"),
        ({"prompt": "x", "seed": "1.5"}, "seed"),
        ({"prompt": "x", "profile": "warp"}, "profile"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": "x", "source": "oracle"}, "source"),
    ],
)
async def test_stream_bad_query(make_client: MakeClient, query: dict[str, str], param: str) -> None:
    client = await make_client()
    response = await client.get("/v1/stream", params=query)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == param
    assert param in error["message"]


async def test_repeated_query_parameter_is_refused(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/v1/stream?prompt=a&prompt=b")
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "prompt"


async def test_unknown_path_and_method(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/v2/whatever")
    assert response.status == 404
    assert (await response.json())["error"]["type"] == "not_found_error"
    response = await client.get("/v1/chat/completions")
    assert response.status == 405
    assert "POST" in response.headers["Allow"]
    assert "error" in await response.json()


async def test_oversized_body_is_413(make_client: MakeClient) -> None:
    client = await make_client()
    big = json.dumps(_chat(user="x" * 2_000_000)).encode()
    response = await client.post("/v1/chat/completions", data=io.BytesIO(big))
    assert response.status == 413
    error = (await response.json())["error"]
    assert "max_body_bytes" in error["message"]


async def test_strict_models(make_client: MakeClient) -> None:
    client = await make_client(Config(strict_models=True))
    response = await client.post("/v1/chat/completions", json=_chat(model="gpt-9"))
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "model_not_found"
    response = await client.post("/v1/chat/completions", json=_chat(model="tokenstream-1"))
    assert response.status == 200
