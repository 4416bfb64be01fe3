"""``store: redis://``: two servers sharing one Redis (stream logs, journal, the limit), and
what happens when Redis goes away."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tokenstream.config import (
    Config,
    ControlConfig,
    ResumeConfig,
    ServerConfig,
    validate_mapping,
)
from tokenstream.engine.clock import LoopClock
from tokenstream.engine.streamlog import parse_event_id
from tokenstream.errors import ConfigError
from tokenstream.server.app import create_app
from tokenstream.server.redis_logs import RedisStreamLogs
from tokenstream.server.state import STATE, AppState

from redis_support import RedisServer, redis_server
from resume_support import (
    FAST,
    PROMPT,
    REQUESTS,
    cut,
    last_id,
    numbered,
    reconnect,
    ui_chat,
)
from support import eventually, parse_sse, wait_for

__all__ = ["redis_server"]  # (the fixture)


Served = Callable[..., Awaitable[tuple[str, AppState]]]


@pytest.fixture
def served(aiohttp_server: Callable[..., Awaitable[Any]], redis_server: RedisServer) -> Served:
    """A server using the test's Redis (each call: another server, on another port)."""

    async def start(**fields: Any) -> tuple[str, AppState]:
        config = Config(store=redis_server.url, **fields)
        server = await aiohttp_server(create_app(config, clock=LoopClock()))
        return str(server.make_url("")).rstrip("/"), server.app[STATE]

    return start


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the test's Redis, to look at what the servers keep there."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.mark.parametrize("dialect", list(REQUESTS))
async def test_a_stream_started_on_one_server_resumes_on_another(
    served: Served, dialect: str,
) -> None:
    first, _ = await served()
    second, _ = await served()
    method, path, kwargs = REQUESTS[dialect]
    async with aiohttp.ClientSession() as session:
        stream_id, before = await cut(
            session, method, first + path,
            headers={**FAST, "X-Tokenstream-Fault": "reset@0.3s"}, **kwargs,
        )
        assert before, "nothing arrived before the cut"
        async with reconnect(session, second, dialect, stream_id, before) as response:
            assert response.status == 200, await response.text()
            assert response.headers["X-Tokenstream-Stream-Id"] == stream_id
            if dialect == "ai-sdk-ui":
                assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            rest = await response.read()
        joined = before + rest
        numbered(joined, stream_id)  # no duplicate, no gap
        async with session.get(f"{first}/v1/streams/{stream_id}?after=0") as log:
            assert await log.read() == joined  # byte for byte what the owner produced
        # once ended, from Redis on the second server too; all seen: 204
        async with session.get(f"{second}/v1/streams/{stream_id}?after=0") as log:
            assert await log.read() == joined
        async with session.get(f"{second}/v1/streams/{stream_id}",
                               params={"after": str(len(parse_sse(joined)))}) as again:
            assert again.status == 204


async def test_a_reader_elsewhere_keeps_the_reply_going_past_linger(served: Served) -> None:
    first, owner = await served(resume=ResumeConfig(linger_s=0.2))
    second, _ = await served()
    params = {"prompt": PROMPT, "tokens_per_second": "40", "ttft_ms": "0"}  # about 1.5 s
    async with aiohttp.ClientSession() as session:
        async with session.get(first + "/v1/stream", params=params) as response:
            stream_id = response.headers["X-Tokenstream-Stream-Id"]
            head = await response.content.readuntil(b"\n\n")
        async with session.get(f"{second}/v1/streams/{stream_id}",
                               headers={"Last-Event-ID": last_id(head)}) as response:
            rest = await response.read()
    joined = head + rest
    numbered(joined, stream_id)
    assert parse_sse(joined)[-1].data == "[DONE]"  # not cancelled after linger_s
    assert owner.stats.completed == 1


async def test_the_redis_copy_keeps_max_bytes_per_stream_at_most(
    served: Served, redis: Redis,
) -> None:
    bound = 1024  # (the least allowed) of a reply of 57 events, 2067 bytes
    first, owner = await served(resume=ResumeConfig(max_bytes_per_stream=bound))
    second, _ = await served()
    params = {"prompt": PROMPT, "tokens_per_second": "40", "ttft_ms": "0"}  # about 1.5 s

    async def in_redis(stream_id: str) -> list[tuple[int, bytes]]:
        """The stream's events in Redis (sequence, bytes), without the end entry."""
        entries = await redis.xrange(f"tokenstream:s:{stream_id}")
        return [(int(entry_id.partition(b"-")[2]), fields[b"e"])
                for entry_id, fields in entries if b"e" in fields]

    def from_event(body: bytes, stream_id: str, seq: int) -> bytes:
        return body[body.index(f"id: {stream_id}:{seq}\n".encode()):]

    async with aiohttp.ClientSession() as session:
        async with session.get(first + "/v1/stream", params=params) as response:
            stream_id = response.headers["X-Tokenstream-Stream-Id"]

            async def trimmed() -> bool:
                kept = await in_redis(stream_id)
                return bool(kept) and kept[0][0] > 1

            await eventually(trimmed)  # while the reply runs
            async with session.get(f"{second}/v1/streams/{stream_id}?after=0") as early:
                assert early.status == 404
                assert (await early.json())["error"]["code"] == "stream_events_not_kept"
            recent = (await in_redis(stream_id))[-1][0] - 2  # (kept for some 25 events more)
            async with session.get(f"{second}/v1/streams/{stream_id}",
                                   params={"after": str(recent)}) as resumed:
                assert resumed.status == 200
                rest = await resumed.read()
            body = await response.read()
        numbered(body, stream_id)
        assert rest == from_event(body, stream_id, recent + 1)

        async def ended() -> bool:
            return await redis.xrange(f"tokenstream:s:{stream_id}", "1-0", "1-0") != []

        await eventually(ended)
        kept = await in_redis(stream_id)
        last = len(parse_sse(body))
        assert [seq for seq, _ in kept] == list(range(kept[0][0], last + 1))
        assert sum(len(event) for _, event in kept) <= bound < len(body)
        assert b"".join(event for _, event in kept) == from_event(body, stream_id, kept[0][0])
        async with session.get(f"{second}/v1/streams/{stream_id}?after=0") as late:
            assert late.status == 404
            assert (await late.json())["error"]["code"] == "stream_events_not_kept"
        after = kept[0][0] - 1
        async with session.get(f"{second}/v1/streams/{stream_id}",
                               params={"after": str(after)}) as resumed:
            assert resumed.status == 200
            assert await resumed.read() == from_event(body, stream_id, after + 1)
    logs = owner.runner.logs
    assert isinstance(logs, RedisStreamLogs)
    assert not logs._mirrored  # (with its copy record) nothing of the stream outlives it


async def test_expired_unknown_and_unresumable_streams_elsewhere(served: Served) -> None:
    first, _ = await served(resume=ResumeConfig(ttl_s=1.0))  # (Redis's EXPIRE: whole seconds)
    second, _ = await served(resume=ResumeConfig(ttl_s=1.0))
    fast = {"prompt": "hi", "ttft_ms": "0", "tokens_per_second": "0"}
    async with aiohttp.ClientSession() as session:
        async with session.get(first + "/v1/stream", params=fast) as done:
            body = await done.read()
            stream_id = done.headers["X-Tokenstream-Stream-Id"]

        async def kept() -> bool:
            async with session.get(f"{second}/v1/streams/{stream_id}?after=1") as response:
                if response.status == 404:
                    return False  # not in Redis yet
                assert response.status == 200  # still kept: what came after event 1
                assert await response.read() == body[body.index(b"\n\n") + 2:]
                return True

        async def expired() -> bool:
            async with session.get(second + "/v1/stream", params={"prompt": "hi"},
                                   headers={"Last-Event-ID": last_id(body)}) as response:
                if response.status == 204:
                    return False  # still kept, and all seen
                assert response.status == 404  # expired: never the reply again
                assert (await response.json())["error"]["code"] == "stream_not_found"
                return True

        await eventually(kept)
        async with session.get(f"{second}/v1/streams/nope") as response:
            assert response.status == 404
        await eventually(expired)  # ttl_s after its end
    third, _ = await served(resume=ResumeConfig(enabled_scripted=False))
    async with aiohttp.ClientSession() as session:
        stream_id, before = await cut(
            session, "GET", third + "/v1/stream",
            params={"prompt": PROMPT, "tokens_per_second": "40", "fault": "reset@5"},
        )

        async def metadata_only(url: str) -> bool:
            async with session.get(url, headers={"Last-Event-ID": last_id(before)}) as again:
                if again.status == 404:
                    return False  # not in Redis yet
                assert again.status == 204  # not resumable: metadata only, never a restart
                assert await again.read() == b""
                return True

        for url in (second + "/v1/stream?prompt=hi", f"{second}/v1/streams/{stream_id}"):
            await eventually(partial(metadata_only, url))


async def test_the_ai_sdk_resumes_a_chat_on_another_server(served: Served) -> None:
    first, _ = await served()
    second, _ = await served()
    body = ui_chat("chat-9")
    async with aiohttp.ClientSession() as session:
        async with session.get(second + "/api/chat/chat-9/stream") as none:
            assert none.status == 204
        async with session.post(first + "/api/chat", json=body) as original:
            stream_id = original.headers["X-Tokenstream-Stream-Id"]
            head = await original.content.readuntil(b"\n\n")
            again = b""

            async def resumed() -> bool:
                nonlocal again
                async with session.get(second + "/api/chat/chat-9/stream") as response:
                    if response.status == 204:
                        return False  # the chat is not in Redis yet
                    assert response.status == 200
                    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
                    assert response.headers["X-Tokenstream-Stream-Id"] == stream_id
                    again = await response.read()
                    return True

            await eventually(resumed)
        async with session.get(f"{first}/v1/streams/{stream_id}?after=0") as log:
            whole = await log.read()
        assert again == whole and again.startswith(head)
        assert parse_sse(again)[-1].data == "[DONE]"

        async def ended() -> bool:  # (a reader may see the end before the stream is marked)
            async with session.get(second + "/api/chat/chat-9/stream") as response:
                await response.read()
                return response.status == 204

        await eventually(ended)


async def test_the_concurrency_limit_is_shared(served: Served) -> None:
    limit = ServerConfig(max_concurrent_streams=1)
    first, _ = await served(server=limit)
    second, _ = await served(server=limit)
    slow = {"prompt": PROMPT, "tokens_per_second": "100", "ttft_ms": "0"}
    async with aiohttp.ClientSession() as session:
        async with session.get(first + "/v1/stream", params=slow) as running:
            assert running.status == 200
            await running.content.readuntil(b"\n\n")
            async with session.get(second + "/v1/stream", params=slow) as refused:
                assert refused.status == 429
                assert "servers sharing this store" in (await refused.json())["error"]["message"]
            await running.read()

        async def admitted() -> bool:
            async with session.get(second + "/v1/stream", params={"prompt": "hi"}) as again:
                await again.read()
                assert again.status in (200, 429)
                return again.status == 200

        await eventually(admitted)  # (the lease goes back without the stream waiting for it)


async def test_the_journal_is_seen_from_every_server(served: Served) -> None:
    control = ControlConfig(max_journal_entries=3)
    first, _ = await served(control=control)
    second, _ = await served(control=control)
    test = {"X-Tokenstream-Test-Id": "t-1"}
    async with aiohttp.ClientSession() as session:
        for base in (first, second, first, second):
            async with session.get(base + "/v1/stream", params={"prompt": "hi", "ttft_ms": "0",
                                   "tokens_per_second": "0"}, headers=test) as response:
                await response.read()
        async with session.get(first + "/v1/stream", params={"prompt": "other"}) as response:
            await response.read()

        async def journal(base: str, **params: str) -> list[dict[str, Any]]:
            async with session.get(base + "/_tokenstream/journal", params=params) as response:
                entries: list[dict[str, Any]] = (await response.json())["entries"]
                return entries

        async def all_written() -> bool:  # (each server writes its entries in the background)
            entries = await journal(second)
            return len(entries) == 3 and entries[-1]["query"]["prompt"] == "other"

        await eventually(all_written)
        entries = await journal(second)
        assert len(entries) == 3  # bounded by control.max_journal_entries, together
        ids = [entry["id"] for entry in entries]
        assert ids == sorted(ids) and len(set(ids)) == 3
        ours = await journal(first, test_id="t-1")
        assert [entry["test_id"] for entry in ours] == ["t-1", "t-1"]
        async with session.delete(second + "/_tokenstream/journal", headers=test) as deleted:
            assert (await deleted.json())["deleted"] == 2
        assert await journal(first, test_id="t-1") == []
        assert len(await journal(first)) == 1


async def test_losing_redis_mid_stream_finishes_the_streams(
    served: Served, redis_server: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    first, state = await served()
    second, _ = await served()
    params = {"prompt": PROMPT, "tokens_per_second": "60", "ttft_ms": "0"}  # about 1 s

    async def whole() -> bytes:
        async with session.get(first + "/v1/stream", params=params) as response:
            return await response.read()

    caplog.set_level(logging.WARNING, logger="tokenstream.store")
    async with aiohttp.ClientSession() as session:
        streams = [asyncio.ensure_future(whole()) for _ in range(5)]
        await wait_for(lambda: state.stats.started == 5)  # (the fifth at least is running)
        redis_server.kill()
        bodies = await asyncio.gather(*streams)
        for body in bodies:
            events = parse_sse(body)
            assert events[-1].data == "[DONE]"
            stream_id = (events[0].id or "").rpartition(":")[0]
            numbered(body, stream_id)
        assert state.stats.completed == 5
        after = await whole()  # Redis still down: a stream as with the memory store
        assert parse_sse(after)[-1].data == "[DONE]"

        def lost() -> int:
            return sum("cannot be reached" in r.getMessage() for r in caplog.records)

        # one warning per server (each stands for a process; the second finds Redis gone at
        # its next refresh), however many operations failed
        await wait_for(lambda: lost() >= 2)
        assert lost() == 2
        assert state.stats.store_errors >= 1
        async with session.get(first + "/metrics") as metrics:
            text = await metrics.text()
        assert f"tokenstream_store_errors_total {float(state.stats.store_errors)}" in text
        # Redis back: new streams use it again
        redis_server.start()
        await wait_for(lambda: caplog.text.count("new streams use it") == 2)
        stream_id, before = await cut(
            session, "GET", first + "/v1/stream",
            params={**params, "fault": "reset@0.2s"},
        )
        async with session.get(f"{second}/v1/streams/{stream_id}",
                               headers={"Last-Event-ID": last_id(before)}) as response:
            assert response.status == 200
            rest = await response.read()
        numbered(before + rest, stream_id)
        assert parse_event_id(parse_sse(rest)[-1].id or "") is not None


@pytest.mark.parametrize(("url", "reason"), [
    ("redis://localhost/0", "names no port"),
    ("http://localhost:6379/0", "is 'memory' or a Redis URL"),
    ("redis://localhost:99999/0", "has a port that is not a number"),
    ("redis://localhost:6379/zero", "has a database that is not a number"),
])
def test_a_bad_store_url_fails_at_start_up_naming_the_key(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_mapping({"store": url}, "config.yaml")
    assert f"store: Value error, store {reason}" in str(error.value)


async def test_a_redis_that_does_not_answer_stops_the_start(
    aiohttp_server: Callable[..., Awaitable[Any]],
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(Config(store=f"redis://127.0.0.1:{port}/0"), clock=LoopClock())
    with pytest.raises(ConfigError, match=r"store: redis://127\.0\.0\.1:\d+/0 does not answer"):
        await aiohttp_server(app)
