"""A completion request reaches the upstream once, never twice; connections are reused.

The fake upstream answers the first request on a keep-alive connection, then reads the
second one on that same connection and drops the connection without a word. A client that
sent the second request again on a new connection (as tokenstream's own HTTP client did,
taking the drop for a connection the server had closed while idle) would have the upstream
generate, and bill, that completion twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient
from rawhttp import END, STREAM_HEAD, RawUpstream, Request, chunked, drop, response, stream_response
from relhelp import assert_openai_error, guarded, make_app

from tokenstream.sources.upstream import UPSTREAM

from support import wait_for
from upstream_support import openai_text, parse_sse, reply_stream

COMPLETION = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hello."},"finish_reason":"stop"}]}'
)


def _body(request_id: str, *, stream: bool) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
            "user": request_id}


def _app(base_url: str) -> Any:
    return make_app(upstream={"base_url": base_url, "api_key_env": "TOKENSTREAM_TEST_UNSET",
                              "profile": "instant"})


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "not-stream"])
@pytest.mark.parametrize("rst", [False, True], ids=["FIN", "RST"])
async def test_a_request_dropped_on_a_reused_connection_is_not_sent_again(
    aiohttp_client: AiohttpClient, stream: bool, rst: bool
) -> None:
    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.index == 0:
            writer.write(stream_response("Hello.") if stream else response(200, COMPLETION))
        else:
            drop(writer, rst=rst)

    upstream = RawUpstream(answer)
    async with upstream.serving():
        client = await aiohttp_client(_app(upstream.url))
        first = await client.post("/v1/chat/completions", json=_body("first", stream=stream))
        assert first.status == 200
        if stream:
            assert openai_text(parse_sse(await first.read())) == "Hello."
        else:
            assert (await first.json())["choices"][0]["message"]["content"] == "Hello."

        second = await client.post("/v1/chat/completions", json=_body("second", stream=stream))
        assert second.status == 502
        error = assert_openai_error(await second.json(), "upstream_disconnected")
        assert "before it answered" in str(error["message"])

        third = await client.post("/v1/chat/completions", json=_body("third", stream=stream))
        assert third.status == 200  # a new connection: answered as its first request
        await third.read()

    assert [r.json()["user"] for r in upstream.requests] == ["first", "second", "third"]
    # the second went on the first one's connection (reused, as the test means), the third
    # on a new one; nothing was sent twice
    assert [(r.connection, r.index) for r in upstream.requests] == [(1, 0), (1, 1), (2, 0)]


async def test_a_reply_whose_body_ends_after_its_done_still_reuses_the_connection(
    aiohttp_client: AiohttpClient,
) -> None:
    """The ``[DONE]`` event often comes one write before the body's end: the reply is
    complete at once, and its connection goes back to the pool when the end arrives."""
    replied = asyncio.Event()

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(STREAM_HEAD + chunked(reply_stream([request.json()["user"]])))
        await writer.drain()
        await guarded(replied.wait())  # the client has the whole reply: then the end
        writer.write(END)

    upstream = RawUpstream(answer)
    async with upstream.serving():
        client = await aiohttp_client(_app(upstream.url))
        proxy = client.app[UPSTREAM]
        reply = await client.post("/v1/chat/completions", json=_body("one", stream=True))
        assert openai_text(parse_sse(await reply.read())) == "one"
        assert proxy._draining  # complete, and waiting for the body's end
        replied.set()
        await wait_for(lambda: not proxy._draining)
        reply = await client.post("/v1/chat/completions", json=_body("two", stream=True))
        assert openai_text(parse_sse(await reply.read())) == "two"
    assert [(r.connection, r.index) for r in upstream.requests] == [(1, 0), (1, 1)]
