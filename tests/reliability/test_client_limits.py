"""One client cannot shut out the others, and a slow or idle one does not keep its
connection for ever."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pytest_aiohttp import AiohttpClient
from relhelp import (
    assert_openai_error,
    get_request,
    guarded,
    held_app,
    make_app,
    raw_connect,
    read_to_end,
    read_until,
    running,
)

from tokenstream.server.app import STATE

from support import wait_for

KEYS = ["sk-client-one-0123456789", "sk-client-two-0123456789"]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_one_client_is_held_to_its_share_and_others_still_get_in(
    aiohttp_client: AiohttpClient,
) -> None:
    app, clock = held_app({"max_streams_per_client": 2, "api_keys": KEYS})
    client = await aiohttp_client(app)
    first = [await client.get("/v1/stream", params={"prompt": "x"}, headers=_auth(KEYS[0]))
             for _ in range(2)]
    assert [r.status for r in first] == [200, 200]
    refused = await client.get("/v1/stream", params={"prompt": "x"}, headers=_auth(KEYS[0]))
    assert refused.status == 429
    error = assert_openai_error(await refused.json(), "rate_limit_exceeded")
    assert "server.max_streams_per_client" in str(error["message"])
    other = await client.get("/v1/stream", params={"prompt": "x"}, headers=_auth(KEYS[1]))
    assert other.status == 200  # another key has its own share
    clock.advance(3600)
    for response in [*first, other]:
        await response.read()
    await wait_for(lambda: app[STATE].stats.active == 0)
    again = await client.get("/v1/stream", params={"prompt": "x"}, headers=_auth(KEYS[0]))
    assert again.status == 200  # the finished streams gave their share back
    clock.advance(3600)
    await again.read()


async def test_a_body_that_trickles_in_gets_a_408() -> None:
    app = make_app({"body_timeout_s": 0.2})
    async with running(app) as (_, port, _runner):
        sock = await raw_connect(port)
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\""
        )
        await asyncio.get_running_loop().sock_sendall(sock, head.encode())
        answer = await read_until(sock, b"\r\n\r\n")
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    app = make_app({"keepalive_timeout_s": 0.2})
    async with running(app) as (_, port, _runner):
        sock = await raw_connect(port)
        await asyncio.get_running_loop().sock_sendall(sock, get_request("/healthz"))
        # the answer, then the end of the connection once it has been idle 0.2 s
        answer = await guarded(read_to_end(sock))
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"status": "ok"' in answer


async def test_oversized_headers_are_a_400_and_no_error_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app()
    async with running(app) as (_, port, _runner):
        sock = await raw_connect(port)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        await asyncio.get_running_loop().sock_sendall(sock, request)
        answer = await guarded(read_to_end(sock))
        sock.close()
    assert b" 400 " in answer.split(b"\r\n", 1)[0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(r.getMessage().startswith("bad request:") for r in caplog.records)


async def test_without_keys_a_made_up_token_is_no_new_share(
    aiohttp_client: AiohttpClient,
) -> None:
    app, clock = held_app({"max_streams_per_client": 1})
    client = await aiohttp_client(app)
    first = await client.get("/v1/stream", params={"prompt": "x"}, headers=_auth("made-up-1"))
    assert first.status == 200
    second = await client.get("/v1/stream", params={"prompt": "x"}, headers=_auth("made-up-2"))
    assert second.status == 429  # the same address: no key is checked, so none counts
    clock.advance(3600)
    await first.read()


async def test_headers_that_trickle_in_are_cut_off_at_the_keep_alive_timeout() -> None:
    """aiohttp applies ``keepalive_timeout`` to a connection's request headers too."""
    app = make_app({"keepalive_timeout_s": 0.3})
    async with running(app) as (_, port, _runner):
        sock = await raw_connect(port)
        loop = asyncio.get_running_loop()
        closed = asyncio.ensure_future(read_to_end(sock))
        request = get_request("/healthz")
        sent = 0
        for byte in request[:-1]:  # one byte every 50 ms, never the last: about 2 s
            if closed.done():
                break
            try:
                await loop.sock_sendall(sock, bytes([byte]))
            except OSError:  # the server closed the connection: a write after it fails
                break
            sent += 1
            await asyncio.sleep(0.05)
        answer = await guarded(closed)
        sock.close()
    assert answer == b""  # closed without an answer
    assert sent < len(request) // 2  # long before the headers could be complete


async def test_shutdown_answers_a_body_still_arriving_at_once(
    aiohttp_client: AiohttpClient,
) -> None:
    app = make_app({"body_timeout_s": 3600, "retry_after_s": 4})
    async with running(app) as (_, port, _runner):
        sock = await raw_connect(port)
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\""
        )
        await asyncio.get_running_loop().sock_sendall(sock, head.encode())
        await wait_for(lambda: app[STATE].streams.uploads == 1)
        stopped = await guarded(app[STATE].streams.shutdown(grace_s=3600, final_timeout_s=5))
        answer = await guarded(read_until(sock, b"\r\n\r\n"))
        sock.close()
    assert stopped == 0
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 4" in answer
