"""Resumable streams: the stream log, and reconnects to every dialect's streams."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tokenstream.config import Config, ResumeConfig
from tokenstream.dialects.catalog import DIALECTS, EncoderOptions
from tokenstream.engine.clock import LoopClock
from tokenstream.engine.events import (
    Finish,
    ReasoningDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.streamlog import MemoryStreamLogs, StreamLog, parse_event_id
from tokenstream.engine.tokenizer import Piece
from tokenstream.server.app import create_app
from tokenstream.server.state import STATE, AppState
from tokenstream.sse.ids import EventIds
from tokenstream.sse.parser import SSEDecoder

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
from support import ManualClock, parse_sse, wait_for

# -- the log -------------------------------------------------------------------------------


def _logs(clock: ManualClock, **bounds: int) -> MemoryStreamLogs:
    return MemoryStreamLogs(
        clock, ttl_s=10.0, max_streams=bounds.get("max_streams", 100),
        max_events_per_stream=bounds.get("max_events", 1000),
        max_bytes_per_stream=bounds.get("max_bytes", 1 << 20),
        max_bytes=bounds.get("max_total_bytes", 1 << 30),
    )


def _write(log: StreamLog, *data: bytes) -> bytes:
    """A write of one event per ``data``, numbered as an encoder numbers them, into ``log``."""
    out = b"".join(log.ids.next_line() + b"data: %b\n\n" % one for one in data)
    log.append(out)
    return out


def _event_of(log: StreamLog, data: bytes) -> None:
    """``data`` as a write of one event (its id taken, without its line: for counting bytes)."""
    log.ids.next_line()
    log.append(data)


def test_a_log_keeps_the_newest_writes_within_its_bounds() -> None:
    log = StreamLog("s", resumable=True, max_events=3, max_bytes=1000)
    writes = [_write(log, b"e%d" % n) for n in range(1, 6)]
    assert log.last_seq == 5 and log.first_kept == 3
    assert log.after(2) == b"".join(writes[2:]) and log.after(4) == writes[4]
    assert log.after(5) == b""
    assert log.has_after(2) and not log.has_after(1)  # e2 is gone: no resuming after e1
    assert not log.has_after(6)  # never sent
    small = StreamLog("s", resumable=True, max_events=100, max_bytes=40)
    writes = [_write(small, b"%d" % n * 4) for n in range(4)]  # 19 bytes each
    assert small.kept_bytes <= 40 and small.after(small.first_kept - 1) == b"".join(writes[2:])
    big = StreamLog("s", resumable=True, max_events=2, max_bytes=1000)
    _write(big, b"1", b"2", b"3")
    assert big.first_kept == 1 and big.has_after(0)  # the newest write is always kept
    _write(big, b"4")
    assert big.first_kept == 4 and not big.has_after(2)


def test_a_reconnect_in_the_middle_of_a_write_gets_the_rest_of_it() -> None:
    log = StreamLog("S", resumable=True, max_events=100, max_bytes=1 << 20)
    first = _write(log, b"a", b"b", b"c")
    second = _write(log, b"d")
    assert log.after(0) == first + second and log.after(3) == second
    assert log.after(1) == b"id: S:2\ndata: b\n\nid: S:3\ndata: c\n\n" + second
    assert log.after(2) == b"id: S:3\ndata: c\n\n" + second
    assert [n for n, _ in log.events_after(1)] == [2, 3, 4]
    assert b"".join(event for _, event in log.events_after(0)) == first + second


def test_a_duplicated_event_travels_with_its_original() -> None:
    """An injected ``duplicate`` fault sends an event twice, under one id."""
    ids = EventIds("S")
    one = ids.next_line() + b"data: x\n\n"
    two = ids.next_line() + b"data: y\n\n"
    assert ids.split(one + one + two) == [(1, one + one), (2, two)]
    assert ids.split(one + b"id: S:2\ndata: cut sh") == [(1, one), (2, b"id: S:2\ndata: cut sh")]


def test_a_log_that_is_not_resumable_keeps_no_events() -> None:
    log = StreamLog("s", resumable=False, max_events=3, max_bytes=1000)
    _write(log, b"e1")
    assert log.last_seq == 1 and log.writes == [] and not log.has_after(0)


def test_logs_expire_ttl_after_their_stream_ended() -> None:
    clock = ManualClock()
    logs = _logs(clock)
    running, ended = logs.open(resumable=True), logs.open(resumable=True)
    ended.finish(clock.now())
    clock.advance(9.9)
    assert logs.get(ended.stream_id) is ended
    clock.advance(0.1)
    assert logs.get(ended.stream_id) is None
    assert logs.get(running.stream_id) is running  # a running stream never expires


def test_the_oldest_finished_log_goes_first_when_full() -> None:
    clock = ManualClock()
    logs = _logs(clock, max_streams=2)
    running = logs.open(resumable=True)
    ended = logs.open(resumable=True)
    ended.finish(clock.now())
    newest = logs.open(resumable=True)
    assert len(logs) == 2
    assert logs.get(ended.stream_id) is None
    assert logs.get(running.stream_id) is running and logs.get(newest.stream_id) is newest


def test_a_chat_names_its_running_stream() -> None:
    clock = ManualClock()
    logs = _logs(clock)
    first = logs.open(resumable=True, chat_id="c1")
    assert logs.for_chat("c1") is first
    second = logs.open(resumable=True, chat_id="c1")
    assert logs.for_chat("c1") is second
    second.finish(clock.now())
    assert logs.for_chat("c1") is None and logs.for_chat("other") is None


def test_event_ids() -> None:
    assert parse_event_id("a:b-c_D:12") == ("a:b-c_D", 12)
    for bad in ("done", "12", "s:", ":3", "s:-1", "s:1x"):
        assert parse_event_id(bad) is None


def _whole_reply(encoder: Any) -> bytes:
    """Every kind of event a reply can have, in every dialect's encoder."""
    out = encoder.event(ReasoningDelta("Let me see")) + encoder.piece(Piece("你好"))
    out += encoder.piece(Piece(" 🙂")) + encoder.event(ToolCallStart(0, "call_1", "f"))
    out += encoder.event(ToolCallDelta(0, '{"a"')) + encoder.event(ToolCallDelta(0, ":1}"))
    out += encoder.event(ToolCallEnd(0)) + encoder.event(Finish("tool_calls"))
    out += encoder.event(Usage(3, 4)) + encoder.end()
    return bytes(out)


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_every_dialect_numbers_every_event(dialect: str) -> None:
    encoder = DIALECTS[dialect].encoder(EncoderOptions(model="m", include_usage=True))
    unnumbered = _whole_reply(encoder)
    assert b"id:" not in unnumbered  # an encoder on its own: as the real API sends it
    encoder = DIALECTS[dialect].encoder(EncoderOptions(model="m", include_usage=True))
    encoder.ids = EventIds("S")
    events = SSEDecoder().feed(_whole_reply(encoder))
    # the id of an event that had none would repeat the one before it
    assert [event.id for event in events] == [f"S:{n}" for n in range(1, len(events) + 1)]
    assert encoder.ids.last == len(events) > 5
    error = DIALECTS[dialect].encoder(EncoderOptions(model="m"))
    error.ids = EventIds("E")
    failed = SSEDecoder().feed(error.piece(Piece("x")) + error.error("boom", "server_error", None))
    assert [event.id for event in failed] == [f"E:{n}" for n in range(1, len(failed) + 1)]


# -- reconnects over HTTP ---------------------------------------------------------------------



Served = Callable[..., Awaitable[tuple[str, AppState]]]


@pytest.fixture
def served(aiohttp_server: Callable[..., Awaitable[Any]]) -> Served:
    """A server on the loop's clock (real pacing): its base URL and its state."""

    async def start(config: Config | None = None) -> tuple[str, AppState]:
        server = await aiohttp_server(create_app(config, clock=LoopClock()))
        return str(server.make_url("")).rstrip("/"), server.app[STATE]

    return start


def _without_ids(body: bytes) -> list[tuple[str | None, str]]:
    return [(e.event, e.data) for e in parse_sse(body)]


@pytest.mark.parametrize("dialect", list(REQUESTS))
async def test_a_cut_stream_resumes_byte_exact(served: Served, dialect: str) -> None:
    base, _state = await served()
    method, path, kwargs = REQUESTS[dialect]
    async with aiohttp.ClientSession() as session:
        async with session.request(method, base + path, headers=FAST, **kwargs) as whole:
            uncut = await whole.read()
        stream_id, before = await cut(
            session, method, base + path, headers={**FAST, "X-Tokenstream-Fault": "reset@0.3s"},
            **kwargs,
        )
        assert before, "nothing arrived before the cut"
        async with reconnect(session, base, dialect, stream_id, before) as response:
            assert response.status == 200
            assert response.headers["X-Tokenstream-Stream-Id"] == stream_id
            rest = await response.read()
        joined = before + rest
        numbered(joined, stream_id)  # no duplicate, no gap
        async with session.get(f"{base}/v1/streams/{stream_id}", params={"after": "0"}) as log:
            assert await log.read() == joined  # byte for byte what was produced
        # the same events as an uncut stream (ids and per-reply random ids aside)
        shapes = [[(event, list(json.loads(data)) if data.startswith("{") else data)
                   for event, data in _without_ids(body)] for body in (joined, uncut)]
        assert shapes[0] == shapes[1]
        # after the end, all seen: 204 (an EventSource stops)
        async with session.get(f"{base}/v1/streams/{stream_id}",
                               params={"after": str(len(parse_sse(joined)))}) as again:
            assert again.status == 204


async def test_the_text_is_whole_after_a_resume(served: Served) -> None:
    base, _state = await served()
    async with aiohttp.ClientSession() as session:
        params = {"prompt": "emoji", "tokens_per_second": "40", "ttft_ms": "0",
                  "fault": "reset@0.2s"}
        _stream_id, before = await cut(session, "GET", base + "/v1/stream", params=params)
        async with session.get(base + "/v1/stream", params=params,
                               headers={"Last-Event-ID": last_id(before)}) as response:
            rest = await response.read()
        async with session.get(base + "/v1/stream", params={"prompt": "emoji"}) as whole:
            expected = "".join(e.data for e in parse_sse(await whole.read())[:-1])
    assert "".join(e.data for e in parse_sse(before + rest)[:-1]) == expected


async def test_unknown_and_expired_streams_are_404(served: Served) -> None:
    base, state = await served(Config(resume=ResumeConfig(ttl_s=0.2)))
    logs = state.runner.logs
    assert logs is not None
    async with aiohttp.ClientSession() as session:
        for headers in ({"Last-Event-ID": "nope:3"}, {"Last-Event-ID": "17"}):
            async with session.get(base + "/v1/stream", params={"prompt": "hi"},
                                   headers=headers) as response:
                assert response.status == 404
                assert (await response.json())["error"]["code"] == "stream_not_found"
        async with session.get(base + "/v1/streams/nope") as response:
            assert response.status == 404
        async with session.get(base + "/v1/stream", params={"prompt": "hi", "ttft_ms": "0",
                                                            "tokens_per_second": "0"}) as done:
            body = await done.read()
            stream_id = done.headers["X-Tokenstream-Stream-Id"]
        async with session.get(f"{base}/v1/streams/{stream_id}?after=1") as response:
            assert response.status == 200  # still kept: what came after event 1
            assert await response.read() == body[body.index(b"\n\n") + 2:]
        await wait_for(lambda: logs.get(stream_id) is None)  # ttl_s after its end
        async with session.get(base + "/v1/stream", params={"prompt": "hi"},
                               headers={"Last-Event-ID": last_id(body)}) as response:
            assert response.status == 404  # expired: never the reply again
        async with session.get(f"{base}/v1/streams/{stream_id}",
                               headers={"Last-Event-ID": "other:1"}) as response:
            assert response.status == 400


async def test_a_stream_that_cannot_be_resumed_is_never_restarted(
    served: Served,
) -> None:
    base, _state = await served(Config(resume=ResumeConfig(enabled_scripted=False)))
    async with aiohttp.ClientSession() as session:
        stream_id, before = await cut(
            session, "GET", base + "/v1/stream",
            params={"prompt": PROMPT, "tokens_per_second": "40", "fault": "reset@5"},
        )
        for url in (base + "/v1/stream?prompt=hi", f"{base}/v1/streams/{stream_id}"):
            async with session.get(url, headers={"Last-Event-ID": last_id(before)}) as again:
                assert again.status == 204
                assert await again.read() == b""


async def test_a_reconnect_within_linger_s_resumes_the_reply(served: Served) -> None:
    base, state = await served(Config(resume=ResumeConfig(linger_s=60)))  # outlasts the test
    params = {"prompt": PROMPT, "tokens_per_second": "100", "ttft_ms": "0"}  # about 0.6 s
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/v1/stream", params=params) as response:
            stream_id = response.headers["X-Tokenstream-Stream-Id"]
            first = await response.content.readuntil(b"\n\n")
        assert state.runner.logs is not None
        log = state.runner.logs.get(stream_id)
        assert log is not None
        await wait_for(lambda: log.last_seq >= 3)  # the client left; the reply goes on
        async with session.get(base + "/v1/stream", params=params,
                               headers={"Last-Event-ID": last_id(first)}) as response:
            assert response.status == 200
            rest = await response.read()
    assert parse_sse(rest)[0].id == f"{stream_id}:2"
    numbered(first + rest, stream_id)
    assert parse_sse(rest)[-1].data == "[DONE]"
    assert state.stats.completed == 1 and state.stats.disconnected == 0


async def test_a_reply_left_for_linger_s_is_cancelled(served: Served) -> None:
    base, state = await served(Config(resume=ResumeConfig(linger_s=0.1)))
    params = {"prompt": PROMPT, "tokens_per_second": "1", "ttft_ms": "0"}  # about a minute
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/v1/stream", params=params) as response:
            stream_id = response.headers["X-Tokenstream-Stream-Id"]
            await response.content.readuntil(b"\n\n")
        assert state.runner.logs is not None
        log = state.runner.logs.get(stream_id)
        assert log is not None
        # (the bound is far below the reply's minute: only the cancel can end it by then)
        await wait_for(lambda: state.stats.active == 0 and log.finished)
        assert parse_sse(log.after(0))[-1].data != "[DONE]"  # cancelled, not played to its end
        assert state.stats.disconnected == 1 and state.stats.completed == 0
        async with session.get(f"{base}/v1/streams/{stream_id}",
                               params={"after": str(log.last_seq)}) as again:
            assert again.status == 204  # a reconnect after it: nothing more, never a restart


async def test_the_ai_sdk_resumes_the_chats_stream(served: Served) -> None:
    base, _state = await served()
    body = ui_chat("chat-7")
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/api/chat/chat-7/stream") as none:
            assert none.status == 204
        async with session.post(base + "/api/chat", json=body) as original:
            stream_id = original.headers["X-Tokenstream-Stream-Id"]
            head = await original.content.readuntil(b"\n\n")
            # (the page that resumes is a new one: the old connection is let go)
            async with session.get(base + "/api/chat/chat-7/stream") as resumed:
                assert resumed.status == 200
                assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
                assert resumed.headers["X-Tokenstream-Stream-Id"] == stream_id
                again = await resumed.read()
        async with session.get(f"{base}/v1/streams/{stream_id}?after=0") as log:
            whole = await log.read()
        # from the start, as the SDK expects, to the end
        assert again == whole and again.startswith(head)
        assert parse_sse(again)[-1].data == "[DONE]"
        async with session.get(base + "/api/chat/chat-7/stream") as ended:
            assert ended.status == 204


def test_the_logs_together_stay_within_max_bytes() -> None:
    """Over the store's byte budget the finished logs go first, then the oldest running
    log's oldest events; the newest running log keeps what it has."""
    clock = ManualClock()
    logs = _logs(clock, max_total_bytes=100)
    oldest, ended, newest = (logs.open(resumable=True) for _ in range(3))
    for log in (oldest, ended):
        for _ in range(4):
            _event_of(log, b"x" * 10)
    ended.finish(clock.now())
    for _ in range(3):
        _event_of(newest, b"y" * 10)
    assert logs.budget.used == 110 - 40  # over by 10: the finished log went whole
    assert logs.get(ended.stream_id) is None and len(logs) == 2
    for _ in range(4):
        _event_of(newest, b"y" * 10)
    assert logs.budget.used <= 100
    assert not oldest.has_after(0)  # its oldest events were dropped: no resume from the start
    assert newest.has_after(0) and newest.kept_bytes == 70
    assert logs.budget.used == oldest.kept_bytes + newest.kept_bytes
