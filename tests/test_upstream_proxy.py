"""tokenstream in front of a fake OpenAI-compatible upstream, end to end over HTTP.

The fake upstream is an aiohttp app in the test with scripted answers, splits and faults.
Pacing runs on a FakeClock (instant); the only real waits are the short network timeouts
some failure tests configure, which the code under test waits for, never the test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openai import AsyncOpenAI
from pytest_aiohttp import AiohttpClient, AiohttpServer

from tokenstream.config import Config, ServerConfig, UpstreamConfig
from tokenstream.engine.clock import FakeClock
from tokenstream.server.app import STATE, create_app

from support import scripted_reply, wait_for
from upstream_support import (
    DONE,
    UPSTREAM_MODEL,
    FakeUpstream,
    answers,
    chunk,
    hangs_before_answering,
    openai_text,
    parse_sse,
    reply_stream,
    sse,
    streams,
    usage_chunk,
)

KEY = "sk-test-0123456789abcdef-SECRET"
KEY_ENV = "TOKENSTREAM_TEST_UPSTREAM_KEY"
REPLY = "你好，世界！Hi 👋🏽 family: 👩‍👩‍👧‍👦 🇯🇵\r\nline two\r\n\r\nend 我懒得写"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "stream": True}

Client = TestClient[web.Request, web.Application]
MakeProxy = Callable[..., Awaitable[Client]]


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def upstream_server(aiohttp_server: AiohttpServer, upstream: FakeUpstream) -> TestServer:
    return await aiohttp_server(upstream.app())


@pytest.fixture
def upstream_url(upstream_server: TestServer) -> str:
    return str(upstream_server.make_url("/v1"))


def _open_connections(server: TestServer) -> int:
    """Connections to the fake upstream that are open, as the upstream sees them."""
    assert server.runner is not None and server.runner.server is not None
    return len(server.runner.server.connections)


def _config(base_url: str, heartbeat_s: float | None = None, **upstream: Any) -> Config:
    fields = {"base_url": base_url, "api_key_env": KEY_ENV, "profile": "instant", **upstream}
    return Config(
        server=ServerConfig(heartbeat_s=heartbeat_s), upstream=UpstreamConfig(**fields)
    )


@pytest.fixture
def proxy(
    aiohttp_client: AiohttpClient, upstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> MakeProxy:
    monkeypatch.setenv(KEY_ENV, KEY)

    async def make(heartbeat_s: float | None = None, **upstream: Any) -> Client:
        config = _config(upstream.pop("base_url", upstream_url), heartbeat_s, **upstream)
        return await aiohttp_client(create_app(config, clock=FakeClock()))

    return make


async def _chat(client: Client, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return await client.post("/v1/chat/completions", json=body or CHAT, **kwargs)


def _chunks(raw: bytes) -> list[dict[str, Any]]:
    events = parse_sse(raw)
    assert events[-1].data == "[DONE]"
    return [json.loads(e.data) for e in events[:-1]]


# -- exact text ---------------------------------------------------------------------------


async def test_exact_text_for_every_split_of_the_reply(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    client = await proxy()
    for cut in range(len(REPLY) + 1):
        deltas = [part for part in (REPLY[:cut], REPLY[cut:]) if part]
        upstream.behaviour = streams(reply_stream(deltas))
        response = await _chat(client)
        assert response.status == 200
        text = openai_text(parse_sse(await response.read()))
        assert text == REPLY, f"split at character {cut}"


async def test_exact_text_when_the_upstream_writes_one_byte_at_a_time(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    raw = reply_stream([REPLY[i : i + 4] for i in range(0, len(REPLY), 4)])
    upstream.behaviour = streams(*(raw[i : i + 1] for i in range(len(raw))))
    client = await proxy()
    response = await _chat(client)
    assert openai_text(parse_sse(await response.read())) == REPLY


@pytest.mark.parametrize("fmt", ["json", "openai"])
async def test_stream_endpoint_through_the_upstream(
    proxy: MakeProxy, upstream: FakeUpstream, fmt: str
) -> None:
    upstream.behaviour = streams(reply_stream([REPLY[:7], REPLY[7:]]))
    client = await proxy()
    response = await client.get(
        "/v1/stream", params={"prompt": "hi", "model": "m1", "format": fmt, "max_tokens": "50"}
    )
    assert response.status == 200
    events = parse_sse(await response.read())
    assert events[-1].data == "[DONE]"
    if fmt == "json":
        text = "".join(json.loads(e.data)["token"] for e in events[:-1])
    else:
        text = openai_text(events)
    assert text == REPLY
    assert upstream.seen[0].body == {
        "model": "m1",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 50,
    }


async def test_head_on_the_stream_endpoint_sends_nothing_upstream(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = streams(reply_stream([REPLY]))
    client = await proxy()
    response = await client.head("/v1/stream", params={"prompt": "hi", "model": "m1"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert (await client.head("/v1/stream", params={"prompt": "hi"})).status == 400  # no model
    assert upstream.seen == []


async def test_stream_endpoint_needs_a_model(proxy: MakeProxy) -> None:
    client = await proxy()
    response = await client.get("/v1/stream", params={"prompt": "hi"})
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "model"


# -- pass-through -------------------------------------------------------------------------


async def test_tool_calls_finish_reason_usage_and_model_pass_through_in_order(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    tool_start = {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    arg_deltas = [
        {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
        for part in ['{"ci', 'ty": "Pa', 'ris"}']
    ]
    upstream.behaviour = streams(
        sse(chunk(role=True))
        + sse(chunk("Let me look that up."))
        + sse(chunk(delta=tool_start))
        + b"".join(sse(chunk(delta=d)) for d in arg_deltas)
        + sse(chunk(finish="tool_calls"))
        + sse(usage_chunk(25, 18))
        + DONE
    )
    client = await proxy()
    body = {**CHAT, "stream_options": {"include_usage": True}}
    chunks = _chunks(await (await _chat(client, body)).read())
    assert {c["model"] for c in chunks} == {UPSTREAM_MODEL}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == "Let me look that up."
    assert len(content) > 1  # re-tokenized
    rest = [c for c in chunks[1:] if c not in content]
    assert [c["choices"][0]["delta"] for c in rest[:-1]] == [tool_start, *arg_deltas, {}]
    assert [c["choices"][0]["finish_reason"] for c in rest[:-1]] == [None] * 4 + ["tool_calls"]
    assert rest[-1]["choices"] == []
    assert rest[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 18, "total_tokens": 43}
    assert chunks.index(content[-1]) < chunks.index(rest[0])  # text first, as it came
    assert all(c["usage"] is None for c in chunks[:-1])  # include_usage shape, as OpenAI


async def test_refusal_passes_through_unchanged(proxy: MakeProxy, upstream: FakeUpstream) -> None:
    upstream.behaviour = streams(
        sse(chunk(role=True))
        + sse(chunk(delta={"refusal": "I can't help"}))
        + sse(chunk(delta={"refusal": " with that."}))
        + sse(chunk(finish="stop"))
        + DONE
    )
    client = await proxy()
    chunks = _chunks(await (await _chat(client)).read())
    refusals = [c["choices"][0]["delta"].get("refusal") for c in chunks if c["choices"]]
    assert [r for r in refusals if r] == ["I can't help", " with that."]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_request_fields_are_forwarded_unchanged(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = streams(reply_stream(["ok"]))
    client = await proxy()
    body = {
        **CHAT,
        "temperature": 0.2,
        "max_tokens": 64,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "stream_options": {"include_usage": True},
        "top_k": 40,  # a vendor extension the upstream may understand
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "tokenstream": {"profile": "steady"},
    }
    response = await _chat(client, body, headers={"Authorization": "Bearer client-key"})
    assert response.status == 200
    await response.read()
    (seen,) = upstream.seen
    assert seen.body == {k: v for k, v in body.items() if k != "tokenstream"}
    assert seen.headers["Authorization"] == f"Bearer {KEY}"  # the client's is not forwarded


async def test_model_override(proxy: MakeProxy, upstream: FakeUpstream) -> None:
    upstream.behaviour = streams(reply_stream(["ok"]))
    client = await proxy(model="llama3.2")
    await (await _chat(client)).read()
    assert upstream.seen[0].body["model"] == "llama3.2"


async def test_forward_client_auth(proxy: MakeProxy, upstream: FakeUpstream) -> None:
    upstream.behaviour = streams(reply_stream(["ok"]))
    client = await proxy(forward_client_auth=True)
    await (await _chat(client, headers={"Authorization": "Bearer client-key"})).read()
    await (await _chat(client)).read()
    assert [s.headers["Authorization"] for s in upstream.seen] == [
        "Bearer client-key",
        f"Bearer {KEY}",  # no client header: the configured key
    ]


async def test_a_client_key_that_is_not_ascii_is_refused_not_altered(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = streams(reply_stream(["ok"]))
    client = await proxy(forward_client_auth=True)
    body = json.dumps(CHAT).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer caf\xe9-key\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 400 ")
    error = json.loads(raw.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "invalid_authorization"
    assert upstream.seen == []


async def test_no_key_means_no_authorization_header(
    proxy: MakeProxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.behaviour = streams(reply_stream(["ok"]))
    client = await proxy(api_key_env="TOKENSTREAM_TEST_UNSET_VARIABLE")
    await (await _chat(client)).read()
    assert "Authorization" not in upstream.seen[0].headers


async def test_not_streamed_request_is_passed_through(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": UPSTREAM_MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": REPLY},
             "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    upstream.behaviour = answers(200, completion)
    client = await proxy()
    response = await _chat(client, {**CHAT, "stream": False})
    assert response.status == 200
    assert await response.json() == completion
    assert upstream.seen[0].body["stream"] is False


async def test_scripted_source_still_answers_on_request(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    client = await proxy()
    body = {**CHAT, "messages": [{"role": "user", "content": "hello"}],
            "tokenstream": {"source": "scripted"}}
    text = openai_text(parse_sse(await (await _chat(client, body)).read()))
    assert text == scripted_reply("hello")
    assert upstream.seen == []


async def test_upstream_source_without_an_upstream_is_a_400(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(create_app(clock=FakeClock()))
    body = {**CHAT, "tokenstream": {"source": "upstream"}}
    for response in (
        await _chat(client, body),
        await client.get("/v1/stream", params={"prompt": "x", "source": "upstream"}),
    ):
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["param"] == "source"
        assert "upstream.base_url" in error["message"]


async def test_n_above_one_is_refused_when_streaming(proxy: MakeProxy) -> None:
    client = await proxy()
    response = await _chat(client, {**CHAT, "n": 2})
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "n"


async def test_models_are_the_upstreams(proxy: MakeProxy, upstream: FakeUpstream) -> None:
    client = await proxy()
    listing = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in listing["data"]] == [UPSTREAM_MODEL]
    assert (await client.get(f"/v1/models/{UPSTREAM_MODEL}")).status == 200
    missing = await client.get("/v1/models/some%2Fother")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "model_not_found"
    assert all(s.headers["Authorization"] == f"Bearer {KEY}" for s in upstream.seen)


# -- failures before streaming ------------------------------------------------------------


@pytest.mark.parametrize(
    "status,body,expected",
    [
        (
            400,
            {"error": {"message": "bad tools", "type": "invalid_request_error",
                       "param": "tools", "code": "invalid_value"}},
            {"message": "bad tools", "type": "invalid_request_error", "param": "tools",
             "code": "invalid_value"},
        ),
        (
            404,
            {"error": {"message": "The model `x` does not exist", "type": "invalid_request_error",
                       "param": None, "code": "model_not_found"}},
            {"message": "The model `x` does not exist", "type": "invalid_request_error",
             "param": None, "code": "model_not_found"},
        ),
        (
            # vLLM's shape: an integer code
            400,
            {"object": "error", "message": "max_tokens too large", "type": "BadRequestError",
             "param": None, "code": 400},
            {"message": "max_tokens too large", "type": "invalid_request_error", "param": None,
             "code": None},
        ),
        (
            503,
            b"upstream overloaded",
            {"message": "The upstream answered HTTP 503: upstream overloaded",
             "type": "upstream_error", "param": None, "code": None},
        ),
    ],
)
async def test_upstream_error_status_and_body_reach_the_client(
    proxy: MakeProxy, upstream: FakeUpstream, status: int, body: Any, expected: dict[str, Any]
) -> None:
    upstream.behaviour = answers(status, body)
    client = await proxy()
    response = await _chat(client)
    assert response.status == status
    assert await response.json() == {"error": expected}


async def test_rate_limit_keeps_retry_after(proxy: MakeProxy, upstream: FakeUpstream) -> None:
    upstream.behaviour = answers(
        429,
        {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}},
        headers={"Retry-After": "7"},
    )
    client = await proxy()
    response = await _chat(client)
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert (await response.json())["error"]["message"] == "Rate limit reached"


async def test_refused_credentials_say_whose_they_are_and_echo_nothing(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = answers(
        401,
        {"error": {"message": f"Incorrect API key provided: {KEY}.",
                   "type": "invalid_request_error", "code": "invalid_api_key"}},
    )
    client = await proxy()
    response = await _chat(client)
    assert response.status == 401
    raw = await response.text()
    assert KEY not in raw
    error = json.loads(raw)["error"]
    assert KEY_ENV in error["message"]
    assert error["code"] == "invalid_api_key"


async def test_unreachable_upstream_is_a_502(
    aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    client = await aiohttp_client(
        create_app(_config(f"http://127.0.0.1:{port}/v1"), clock=FakeClock())
    )
    response = await _chat(client)
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable"
    assert error["type"] == "upstream_error"


async def test_no_answer_within_first_byte_timeout_is_a_504(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = hangs_before_answering()
    client = await proxy(first_byte_timeout_s=0.05)
    response = await _chat(client)
    assert response.status == 504
    error = (await response.json())["error"]
    assert error["code"] == "upstream_timeout"
    assert "first_byte_timeout_s" in error["message"]
    await asyncio.wait_for(upstream.closed.wait(), 10)  # the abandoned request is closed


async def test_full_pool_waits_at_most_connect_timeout(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = streams(sse(chunk(role=True)), then="hang")
    # a timeout the first connection makes even on a loaded machine
    client = await proxy(max_connections=1, connect_timeout_s=0.3)
    holding = await _chat(client)  # takes the pool's only connection and keeps it
    assert holding.status == 200
    response = await _chat(client)
    assert response.status == 504
    error = (await response.json())["error"]
    assert "connect_timeout_s" in error["message"]
    holding.close()


async def test_answer_that_is_not_a_stream_is_a_502(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = answers(200, {"object": "chat.completion", "choices": []})
    client = await proxy()
    response = await _chat(client)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_not_streaming"


# -- failures after streaming started -----------------------------------------------------


def _error_then_done(raw: bytes) -> tuple[str, dict[str, Any]]:
    events = parse_sse(raw)
    assert events[-1].data == "[DONE]"
    error = json.loads(events[-2].data)
    assert set(error) == {"error"}
    return openai_text(events[:-2]), error["error"]


PARTIAL = sse(chunk(role=True)) + sse(chunk("Partial answer is here"))


@pytest.mark.parametrize(
    "then,tail,code",
    [
        ("end", sse({"error": {"message": "The server had an error", "type": "server_error",
                                "code": None}}), None),
        ("drop", b"", "upstream_disconnected"),
        ("end", b"", "upstream_disconnected"),  # no finish reason, no [DONE]
        ("hang", b"", "upstream_timeout"),
    ],
    ids=["error-event", "connection-dropped", "ended-early", "stalled"],
)
async def test_failure_after_start_ends_with_an_error_event_and_done(
    proxy: MakeProxy, upstream: FakeUpstream, then: str, tail: bytes, code: str | None
) -> None:
    gate = asyncio.Event()
    upstream.behaviour = streams(PARTIAL + tail, then=then, gate=gate)
    client = await proxy(idle_timeout_s=0.05)
    response = await _chat(client)
    assert response.status == 200
    # the failure comes only once the client has some of the reply (a dropped connection
    # loses what the proxy had not read yet, as it would on a real network)
    raw = b""
    while "Partial answer" not in openai_text(parse_sse(raw)):
        raw += await asyncio.wait_for(response.content.readuntil(b"\n\n"), 10)
    gate.set()
    text, error = _error_then_done(raw + await response.read())
    assert text == "Partial answer is here"  # the held-back end comes before the error
    assert error["code"] == code
    assert error["message"]
    assert client.app[STATE].stats.failed == 1


async def test_headers_reach_the_client_while_the_upstream_is_silent(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    # they go out when the stream starts: a slow upstream (a reasoning model) does not keep
    # the response's status from the client, with or without heartbeats
    gate = asyncio.Event()
    upstream.behaviour = streams(gate=gate)  # 200 and headers, then nothing until the gate
    client = await proxy(heartbeat_s=None)
    response = await asyncio.wait_for(_chat(client), 10)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    gate.set()
    await response.read()


async def test_no_first_event_within_first_byte_timeout_after_headers(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = streams(then="hang")  # 200 and headers, then nothing
    client = await proxy(first_byte_timeout_s=0.05)
    response = await _chat(client)
    assert response.status == 200
    text, error = _error_then_done(await response.read())
    assert text == ""
    assert error["code"] == "upstream_timeout"
    assert "first_byte_timeout_s" in error["message"]


async def test_heartbeat_while_the_upstream_is_silent(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    upstream.behaviour = streams(sse(chunk(role=True)), then="hang")
    client = await proxy(heartbeat_s=0.05)
    response = await _chat(client)
    assert await asyncio.wait_for(response.content.readuntil(b"\n"), 10) == b": ping\n"
    response.close()


# -- the client leaves --------------------------------------------------------------------


async def test_client_disconnect_closes_the_upstream_request(
    proxy: MakeProxy, upstream: FakeUpstream
) -> None:
    """No timer is involved (timeouts an hour, no heartbeat, an upstream that waits forever):
    the upstream can only see its connection close because the client's did."""
    upstream.behaviour = streams(sse(chunk(role=True)) + sse(chunk("Hello there, how")),
                                 then="hang")
    client = await proxy(idle_timeout_s=3600, first_byte_timeout_s=3600)
    stats = client.app[STATE].stats
    response = await _chat(client)
    first = await response.content.readuntil(b"\n\n")
    assert b'"role":"assistant"' in first
    assert stats.active == 1
    loop = asyncio.get_running_loop()
    left_at = loop.time()
    response.close()
    await asyncio.wait_for(upstream.closed.wait(), 10)  # a bound against hanging only
    assert upstream.cancelled  # its handler was cancelled by the closed connection
    assert upstream.closed_at is not None
    logging.getLogger(__name__).info(
        "upstream closed %.1f ms after the client left", (upstream.closed_at - left_at) * 1000
    )
    assert stats.active == 0
    assert stats.disconnected == 1
    assert [t for t in asyncio.all_tasks() if "read_into" in repr(t.get_coro())] == []


async def test_client_leaving_before_the_upstream_answered_closes_the_upstream_request(
    proxy: MakeProxy, upstream: FakeUpstream, upstream_server: TestServer
) -> None:
    """The request was sent (``UpstreamClient.begin``) and its answer is awaited: the client's
    close alone must reach the upstream, and its pool slot must be free again."""
    upstream.behaviour = hangs_before_answering()
    client = await proxy(idle_timeout_s=3600, first_byte_timeout_s=3600, max_connections=1)
    request = asyncio.ensure_future(_chat(client))
    await wait_for(lambda: bool(upstream.seen))
    request.cancel()  # the client's connection closes
    await asyncio.wait_for(upstream.closed.wait(), 10)  # a bound against hanging only
    assert upstream.cancelled
    await wait_for(lambda: _open_connections(upstream_server) == 0)
    upstream.behaviour = streams(reply_stream(["again"]))
    response = await _chat(client)  # with max_connections 1: the slot was given back
    assert response.status == 200
    assert "again" in await response.text()


async def test_a_proxied_stream_leaves_no_reference_cycle(
    proxy: MakeProxy, upstream: FakeUpstream, upstream_url: str
) -> None:
    """Finished, and with its client gone mid-stream: freed by reference counting (a cycle
    would wait for a full collection, which stops every stream, see test_no_cycles)."""
    import gc

    from aiohttp import ClientResponse

    from tokenstream.engine.live import ArrivalBuffer
    from tokenstream.sources.upstream import PendingAnswer, UpstreamReply
    from tokenstream.sse.transport import SSEResponse

    kinds = (UpstreamReply, PendingAnswer, ClientResponse, ArrivalBuffer, SSEResponse)

    def ours(o: object) -> bool:  # the test's own responses from tokenstream are not
        if isinstance(o, ClientResponse):
            return str(o.url).startswith(upstream_url)
        return isinstance(o, kinds)

    client = await proxy(idle_timeout_s=3600, first_byte_timeout_s=3600)
    stats = client.app[STATE].stats
    gc.collect()
    gc.disable()
    try:
        upstream.behaviour = streams(reply_stream(["Hello", " there"]))
        finished = await _chat(client)
        assert openai_text(parse_sse(await finished.read())) == "Hello there"
        upstream.behaviour = streams(sse(chunk(role=True)) + sse(chunk("Hello there, how")),
                                     then="hang")
        response = await _chat(client)
        await response.content.readuntil(b"\n\n")
        response.close()
        await wait_for(lambda: stats.active == 0 and stats.disconnected == 1)
        for _ in range(20):
            await asyncio.sleep(0)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if ours(o)]
        gc.garbage.clear()
        alive = [type(o).__name__ for o in gc.get_objects() if ours(o)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []
    assert alive == []  # nor kept by anything else (a timer still set, say)


# -- secrets ------------------------------------------------------------------------------


async def test_key_is_never_logged_nor_echoed(
    proxy: MakeProxy, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await proxy(idle_timeout_s=0.05)
    bodies: list[str] = []
    scenarios = [
        streams(reply_stream(["fine"])),
        answers(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}),
        answers(500, f"internal error for key {KEY}".encode()),
        answers(400, {"error": {"message": f"bad request from {KEY}", "type": "x"}}),
        streams(sse(chunk("a")) + sse({"error": {"message": f"quota of {KEY} exceeded"}})),
        streams(f"data: not json {KEY}\n\n".encode()),
        streams(sse(chunk("a")), then="hang"),
    ]
    for behaviour in scenarios:
        upstream.behaviour = behaviour
        response = await _chat(client)
        bodies.append(await response.text())
    assert all(s.headers["Authorization"] == f"Bearer {KEY}" for s in upstream.seen)
    assert len(upstream.seen) == len(scenarios)
    for body in bodies:
        assert KEY not in body
    assert caplog.records  # the failures were logged ...
    assert KEY not in caplog.text  # ... without the key
    assert "Authorization" not in caplog.text


# -- end to end ---------------------------------------------------------------------------


@pytest.fixture
async def tokenstream_upstream(aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(create_app(clock=FakeClock()))
    return str(server.make_url("/v1"))


async def test_tokenstream_in_front_of_tokenstream(
    aiohttp_client: AiohttpClient, tokenstream_upstream: str
) -> None:
    chinese = scripted_reply("chinese")
    client = await aiohttp_client(create_app(_config(tokenstream_upstream), clock=FakeClock()))
    body = {
        "model": "tokenstream-1",
        "messages": [{"role": "user", "content": "say it in chinese"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = _chunks(await (await _chat(client, body)).read())
    assert openai_text(parse_sse(b"".join(sse(c) for c in chunks))) == chinese
    assert {c["model"] for c in chunks} == {"tokenstream-1"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == ["stop"]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.fixture
async def sdk_through_proxy(
    upstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsyncOpenAI]:
    monkeypatch.setenv(KEY_ENV, KEY)
    server = TestServer(create_app(_config(upstream_url), clock=FakeClock()))
    await server.start_server()
    client = AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="anything", max_retries=0)
    yield client
    await client.close()
    await server.close()


async def test_openai_sdk_assembles_text_and_tool_calls_through_the_proxy(
    sdk_through_proxy: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.behaviour = streams(
        sse(chunk(role=True))
        + b"".join(sse(chunk(REPLY[i : i + 5])) for i in range(0, len(REPLY), 5))
        + sse(chunk(delta={"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                                           "function": {"name": "lookup", "arguments": ""}}]}))
        + sse(chunk(delta={"tool_calls": [{"index": 0, "function": {"arguments": '{"q": 1}'}}]}))
        + sse(chunk(finish="tool_calls"))
        + DONE
    )
    stream = await sdk_through_proxy.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text, arguments, name, finish, models = "", "", None, None, set()
    async for item in stream:
        models.add(item.model)
        delta = item.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            name = name or (call.function.name if call.function else None)
            arguments += (call.function.arguments or "") if call.function else ""
        finish = item.choices[0].finish_reason or finish
    assert text == REPLY
    assert (name, json.loads(arguments), finish) == ("lookup", {"q": 1}, "tool_calls")
    assert models == {UPSTREAM_MODEL}


async def test_upstream_pool_is_one_for_the_app_reused_and_closed_with_it(
    aiohttp_client: AiohttpClient,
    upstream_url: str,
    upstream: FakeUpstream,
    upstream_server: TestServer,
) -> None:
    from tokenstream.sources.upstream import UPSTREAM

    peers: list[object] = []
    answer = streams(reply_stream(["ok"]))

    async def behaviour(request: web.Request, fake: FakeUpstream) -> web.StreamResponse:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return await answer(request, fake)

    upstream.behaviour = behaviour
    app = create_app(_config(upstream_url), clock=FakeClock())
    client = await aiohttp_client(app)
    session = app[UPSTREAM]._session
    assert session is not None
    for _ in range(3):
        await (await _chat(client)).read()
    assert app[UPSTREAM]._session is session
    assert len(peers) == 3
    assert len(set(peers)) == 1  # one keep-alive connection carried all three
    assert _open_connections(upstream_server) == 1
    await client.close()
    assert session.closed
    await wait_for(lambda: _open_connections(upstream_server) == 0)


async def test_upstream_stream_handler_is_cancelled_when_proxy_stops(
    aiohttp_client: AiohttpClient, upstream: FakeUpstream, upstream_url: str
) -> None:
    """Shutting the app down mid-stream leaves no upstream request open."""
    upstream.behaviour = streams(sse(chunk(role=True)) + sse(chunk("a b c d")), then="hang")
    client = await aiohttp_client(create_app(_config(upstream_url), clock=FakeClock()))
    response = await _chat(client)
    await response.content.readuntil(b"\n\n")
    await client.close()
    await asyncio.wait_for(upstream.closed.wait(), 10)


async def test_terminal_client_through_the_proxy(proxy: MakeProxy, upstream: FakeUpstream) -> None:
    from tokenstream.client import stream_prompt

    upstream.behaviour = streams(reply_stream([REPLY[:9], REPLY[9:]]))
    client = await proxy()
    written: list[str] = []
    summary = await stream_prompt(
        str(client.make_url("")), "hi", {"model": "m1"}, written.append, session=client.session
    )
    assert summary.error is None
    assert "".join(written) == REPLY
    assert upstream.seen[0].body["model"] == "m1"
