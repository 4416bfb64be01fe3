"""Limits from config: concurrency (429), body size (413), prompt and reply tokens, duration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from relhelp import FAST, assert_openai_error, held_app, make_app, make_config, parse_sse

from tokenstream.config import load_config
from tokenstream.engine.clock import FakeClock
from tokenstream.errors import ConfigError
from tokenstream.server.app import STATE

from support import wait_for


def _chat(content: str = "hello", **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


async def test_beyond_max_concurrent_streams_answers_429_with_retry_after(
    aiohttp_client: AiohttpClient,
) -> None:
    app, clock = held_app({"max_concurrent_streams": 1, "retry_after_s": 7})
    client = await aiohttp_client(app)
    first = await client.get("/v1/stream", params={"prompt": "x"})
    await wait_for(lambda: clock.sleepers == 1)
    assert app[STATE].stats.active == 1

    for second in (
        await client.get("/v1/stream", params={"prompt": "x"}),
        await client.post("/v1/chat/completions", json=_chat(stream=True)),
        await client.post("/v1/chat/completions", json=_chat()),
    ):
        assert second.status == 429
        assert second.headers["Retry-After"] == "7"
        error = assert_openai_error(await second.json(), "rate_limit_exceeded")
        assert "server.max_concurrent_streams" in str(error["message"])

    clock.advance(3600)
    assert (await first.read()).endswith(b"data: [DONE]\n\n")
    again = await client.get("/v1/stream", params={"prompt": "x"})
    assert again.status == 200
    await wait_for(lambda: clock.sleepers == 1)
    clock.advance(3600)
    assert (await again.read()).endswith(b"data: [DONE]\n\n")


async def test_body_over_max_body_bytes_answers_413_in_openai_shape(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(make_app({"max_body_bytes": 2048}))
    body = json.dumps(_chat("x" * 5000)).encode()
    response = await client.post(
        "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    error = assert_openai_error(await response.json(), "request_too_large")
    assert "2048" in str(error["message"]) and "server.max_body_bytes" in str(error["message"])

    async def chunks():  # no Content-Length: the limit holds for a chunked body too
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    chunked = await client.post(
        "/v1/chat/completions", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status == 413
    assert_openai_error(await chunked.json(), "request_too_large")


async def test_prompt_over_max_prompt_tokens_answers_400(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app({"max_prompt_tokens": 20}))
    long_prompt = "word " * 50
    for response, param in (
        (await client.post("/v1/chat/completions", json=_chat(long_prompt, stream=True)),
         "messages"),
        (await client.post("/v1/chat/completions", json=_chat(long_prompt)), "messages"),
        (await client.get("/v1/stream", params={"prompt": long_prompt}), "prompt"),
    ):
        assert response.status == 400
        error = assert_openai_error(await response.json(), "context_length_exceeded")
        assert error["param"] == param
        assert "server.max_prompt_tokens" in str(error["message"])
    short = await client.get("/v1/stream", params={"prompt": "hi"})
    assert short.status == 200
    await short.read()


async def test_a_refused_request_releases_its_stream_slot(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app({"max_concurrent_streams": 1, "max_prompt_tokens": 20,
                                            "max_reply_tokens": 5}))
    for _ in range(3):
        refused = await client.get("/v1/stream", params={"prompt": "word " * 50})
        assert refused.status == 400
        too_many = await client.post("/v1/chat/completions", json=_chat(max_tokens=9))
        assert too_many.status == 400
    ok = await client.get("/v1/stream", params={"prompt": "hi"})
    assert ok.status == 200
    await ok.read()


async def test_max_reply_tokens_refuses_larger_requests_and_truncates_replies(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(make_app({"max_reply_tokens": 5}))
    refused = await client.post("/v1/chat/completions", json=_chat(max_tokens=6, stream=True))
    assert refused.status == 400
    error = assert_openai_error(await refused.json(), "invalid_value")
    assert error["param"] == "max_tokens" and "server.max_reply_tokens" in str(error["message"])

    streamed = await client.post(
        "/v1/chat/completions",
        json=_chat(stream=True, stream_options={"include_usage": True}),
    )
    events = parse_sse(await streamed.read())
    chunks = [json.loads(e.data) for e in events if e.data != "[DONE]"]
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"

    whole = await client.post("/v1/chat/completions", json=_chat())
    body = await whole.json()
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["finish_reason"] == "length"


async def test_a_stream_longer_than_max_stream_duration_ends_with_an_error_event(
    aiohttp_client: AiohttpClient,
) -> None:
    clock = FakeClock()
    app = make_app(
        {"max_stream_duration_s": 1.5},
        clock=clock,
        profiles={"two_per_s": {**FAST, "tokens_per_second": 2}},
        default_profile="two_per_s",
    )
    client = await aiohttp_client(app)
    response = await client.get("/v1/stream", params={"prompt": "hello", "format": "json"})
    events = parse_sse(await response.read())
    assert events[-1].data == "[DONE]"
    error = assert_openai_error(json.loads(events[-2].data), "stream_duration_exceeded")
    assert "server.max_stream_duration_s" in str(error["message"])
    tokens = [json.loads(e.data) for e in events[:-2]]
    assert len(tokens) == 4  # at 0, 0.5, 1.0 and 1.5 s; the fifth would be due at 2.0 s
    assert clock.now() == pytest.approx(1.5)  # it slept to the limit, not past it

    whole = await client.post("/v1/chat/completions", json=_chat())
    assert whole.status == 400
    assert_openai_error(await whole.json(), "stream_duration_exceeded")
    assert app[STATE].stats.active == 0


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("server:\n  send_timeout_s: 0\n", "server.send_timeout_s"),
        ("server:\n  send_timeout_s: .nan\n", "server.send_timeout_s"),
        ("server:\n  max_buffered_bytes: 10\n", "server.max_buffered_bytes"),
        ("server:\n  max_concurrent_streams: -1\n", "server.max_concurrent_streams"),
        ("server:\n  max_stream_duration_s: -5\n", "server.max_stream_duration_s"),
        ("server:\n  shutdown_grace_s: abc\n", "server.shutdown_grace_s"),
        ("server:\n  cors_origins: ['http://example.com/']\n", "server.cors_origins"),
        ("server:\n  open_paths: ['healthz']\n", "server.open_paths"),
        ("server:\n  access_log_level: LOUD\n", "server.access_log_level"),
        ("server:\n  api_keys: ['sk-abc']\n", "server.api_keys"),
    ],
)
def test_bad_limit_config_names_file_key_and_reason(
    tmp_path: Path, yaml_text: str, key: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert str(path) in message and key in message
    assert "sk-abc" not in message  # a key is never echoed, even a malformed one


def test_zero_means_no_limit() -> None:
    server = make_config(
        {"max_concurrent_streams": 0, "max_prompt_tokens": 0, "max_reply_tokens": 0,
         "max_stream_duration_s": 0}
    ).server
    assert server.max_concurrent_streams is None
    assert server.max_prompt_tokens is None
    assert server.max_reply_tokens is None
    assert server.max_stream_duration_s is None
