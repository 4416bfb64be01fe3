"""What of the upstream's answer reaches the client, and what is kept from it (issue 18).

- An error status keeps the headers a client acts on: ``Retry-After``, ``retry-after-ms``,
  ``x-ratelimit-*`` and ``x-request-id``; nothing else of the upstream's headers.
- A header value that cannot be passed on unchanged (a control character, non-ASCII) is
  dropped: it never breaks the response to the client.
- An answer passed on whole (``stream: false``, the model list) is at most
  ``upstream.max_body_bytes``; a larger one is a 502 that names the setting.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient
from rawhttp import END, RawUpstream, Request, chunked, response
from relhelp import assert_openai_error, make_app

from tokenstream.sources.upstream import forwarded_headers

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
RATE_LIMITED = json.dumps(
    {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}}
).encode()
KEPT = [
    ("Retry-After", "7"),
    ("retry-after-ms", "6500"),
    ("x-ratelimit-limit-requests", "500"),
    ("x-ratelimit-remaining-requests", "0"),
    ("x-ratelimit-reset-tokens", "1m30s"),
    ("x-request-id", "req_0123456789abcdef"),
]
NOT_KEPT = [
    ("Set-Cookie", "session=upstream-secret"),
    ("openai-organization", "org-of-the-operator"),
    ("X-Internal-Route", "pod-7"),
]


def _app(base_url: str, **upstream: Any) -> web.Application:
    return make_app(upstream={"base_url": base_url, "api_key_env": "TOKENSTREAM_TEST_UNSET",
                              "profile": "instant", **upstream})


def answering(data: bytes) -> RawUpstream:
    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(data)

    return RawUpstream(answer)


@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "not-stream"])
async def test_retry_and_rate_limit_headers_reach_the_client(
    aiohttp_client: AiohttpClient, status: int, stream: bool
) -> None:
    headers = [(name, value.encode()) for name, value in KEPT + NOT_KEPT]
    upstream = answering(response(status, RATE_LIMITED, headers))
    async with upstream.serving():
        client = await aiohttp_client(_app(upstream.url))
        answer = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert answer.status == status
        error = assert_openai_error(await answer.json(), "rate_limit")
        assert error["message"] == "Rate limit reached"
    for name, value in KEPT:
        assert answer.headers.get(name) == value, name
    for name, _ in NOT_KEPT:
        assert name not in answer.headers, name


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "not-stream"])
async def test_header_values_that_cannot_be_passed_on_are_dropped(
    aiohttp_client: AiohttpClient, stream: bool
) -> None:
    headers = [
        ("Retry-After", b"7"),
        ("x-request-id", b"req\x01id"),
        ("retry-after-ms", b"65\x0b00"),
        ("x-ratelimit-remaining-requests", b"9\x7f"),
        ("x-ratelimit-limit-requests", b"caf\xe9"),  # not UTF-8
        ("x-ratelimit-limit-tokens", "café".encode()),
        ("x-ratelimit-reset-requests", b"1s\t2s"),
        ("x-ratelimit-reset-tokens", b"x" * 1025),
    ]
    upstream = answering(response(429, RATE_LIMITED, headers))
    async with upstream.serving():
        client = await aiohttp_client(_app(upstream.url))
        answer = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert answer.status == 429
        assert_openai_error(await answer.json(), "rate_limit")
    assert answer.headers["Retry-After"] == "7"
    dropped = [name for name, _ in headers[1:] if name in answer.headers]
    assert dropped == []


async def test_a_passed_on_answer_keeps_valid_headers_and_drops_the_others(
    aiohttp_client: AiohttpClient,
) -> None:
    completion = b'{"object":"chat.completion","choices":[]}'
    headers = [("x-request-id", b"req_1"), ("x-ratelimit-remaining-tokens", b"1\x01")]
    upstream = answering(response(200, completion, headers))
    async with upstream.serving():
        client = await aiohttp_client(_app(upstream.url))
        answer = await client.post("/v1/chat/completions", json=CHAT)
        assert answer.status == 200
        assert await answer.read() == completion
    assert answer.headers["x-request-id"] == "req_1"
    assert "x-ratelimit-remaining-tokens" not in answer.headers


@pytest.mark.parametrize(
    "value",
    ["7\r\nSet-Cookie: x=1", "7\n", "7\r", "a\x00b", "a\tb", "a\x1bb", "a\x7fb", "a\udce9b", "é"],
)
def test_forwarded_headers_never_keep_a_line_break_or_control_character(value: str) -> None:
    assert forwarded_headers({"Retry-After": value, "x-request-id": "ok"}) == {
        "x-request-id": "ok"
    }


def test_forwarded_headers_are_only_those_a_client_acts_on() -> None:
    upstream = dict(KEPT + NOT_KEPT + [("Content-Type", "application/json")])
    assert forwarded_headers(upstream) == dict(KEPT)


# -- upstream.max_body_bytes ----------------------------------------------------------


def _json_of(size: int) -> bytes:
    body = b'{"pad":"' + b"x" * (size - 10) + b'"}'
    assert len(body) == size
    return body


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models"])
async def test_an_answer_over_max_body_bytes_is_a_502_naming_the_setting(
    aiohttp_client: AiohttpClient, framing: str, path: str
) -> None:
    sizes: list[int] = []  # of the next answers, in order

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        body = _json_of(sizes.pop(0))
        if framing == "length":
            writer.write(response(200, body))
            return
        parts = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(map(chunked, parts)) + END
        )

    upstream = RawUpstream(answer)
    async with upstream.serving():
        client = await aiohttp_client(_app(upstream.url, max_body_bytes=4096))

        async def call(size: int) -> Any:
            sizes.append(size)
            if path == "/v1/models":
                return await client.get(path)
            return await client.post(path, json=CHAT)

        at_limit = await call(4096)
        assert at_limit.status == 200
        assert await at_limit.read() == _json_of(4096)
        for size in (4097, 1_000_000):
            over = await call(size)
            assert over.status == 502
            error = assert_openai_error(await over.json(), "upstream_too_large")
            assert "4096 bytes (upstream.max_body_bytes)" in str(error["message"])
        after = await call(10)
        assert after.status == 200
    connections = [r.connection for r in upstream.requests]
    assert connections[1] == connections[0]  # an answer within the limit: reused
    assert connections[3] != connections[2]  # one far over it: closed, the rest not read
