"""Proxied (upstream) streams obey the same limits, shutdown and access log as scripted ones."""

from __future__ import annotations

import json
import logging

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer
from relhelp import assert_openai_error, guarded, make_config

from tokenstream.engine.clock import FakeClock
from tokenstream.server.accesslog import ACCESS_LOGGER
from tokenstream.server.app import STATE, create_app

from upstream_support import FakeUpstream, chunk, parse_sse, sse, streams

KEY_ENV = "TOKENSTREAM_TEST_UPSTREAM_KEY"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def test_proxied_stream_limits_shutdown_and_access_line(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, ACCESS_LOGGER)
    monkeypatch.setenv(KEY_ENV, "sk-upstream-key-0123456789")
    upstream = FakeUpstream()
    upstream.behaviour = streams(sse(chunk(role=True)) + sse(chunk("Hello there, how are")),
                                 then="hang")
    upstream_url = str((await aiohttp_server(upstream.app())).make_url("/v1"))
    config = make_config(
        {"max_concurrent_streams": 1, "retry_after_s": 3},
        upstream={"base_url": upstream_url, "api_key_env": KEY_ENV, "profile": "instant",
                  "idle_timeout_s": 3600, "first_byte_timeout_s": 3600},
    )
    app = create_app(config, clock=FakeClock(), environ={})
    client = await aiohttp_client(app)

    first = await client.post("/v1/chat/completions", json=CHAT)
    assert b'"role":"assistant"' in await guarded(first.content.readuntil(b"\n\n"))
    second = await client.post("/v1/chat/completions", json=CHAT)
    assert second.status == 429
    assert second.headers["Retry-After"] == "3"
    assert_openai_error(await second.json(), "rate_limit_exceeded")

    # the upstream hangs: only the shutdown can end this stream
    assert await guarded(app[STATE].streams.shutdown(grace_s=0, final_timeout_s=5)) == 1
    events = parse_sse(await first.read())
    assert events[-1].data == "[DONE]"
    assert_openai_error(json.loads(events[-2].data), "server_shutting_down")
    await guarded(upstream.closed.wait())  # the upstream request was closed too
    assert app[STATE].stats.active == 0

    lines = [getattr(r, "access", {}) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(line["status"], line["outcome"]) for line in lines] == [
        (429, "error"), (200, "shutdown")
    ]
    assert lines[1]["stream"] is True and lines[1]["tokens"] >= 1
