"""Requests that are cheap to send and costly to serve do not stall everyone else."""

from __future__ import annotations

import gzip
import threading
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient
from relhelp import assert_openai_error, make_app

from tokenstream.server import reply_sources


async def test_a_compressed_body_is_refused_before_it_is_read(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(make_app())
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in about 64 KiB
    response = await client.post(
        "/v1/chat/completions",
        data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 415
    error = assert_openai_error(await response.json(), "unsupported_content_encoding")
    assert "uncompressed" in str(error["message"])
    plain = await client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
    }, headers={"Content-Encoding": "identity"})
    assert plain.status == 200


@pytest.mark.parametrize(("length", "off_the_loop"), [(100, False), (20_000, True)])
async def test_a_long_prompt_is_counted_off_the_event_loop(
    aiohttp_client: AiohttpClient,
    monkeypatch: pytest.MonkeyPatch,
    length: int,
    off_the_loop: bool,
) -> None:
    counted_in: list[str] = []
    real = reply_sources.count_prompt_tokens

    def spy(*args: Any) -> int:
        counted_in.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(reply_sources, "count_prompt_tokens", spy)
    client = await aiohttp_client(make_app({"max_prompt_tokens": 1000}))
    prompt = "懒" * length
    response = await client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": prompt}],
    })
    assert response.status == (400 if off_the_loop else 200)
    main = threading.main_thread().name
    assert (counted_in[0] != main) is off_the_loop
