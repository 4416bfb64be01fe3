"""The path to the first token of a proxied reply: what it skips, and what it must keep.

The live stage takes the source's items itself until the first piece (no reader task in
between) and tokenizes a long first text in slices; the client's body bytes go upstream
as they came when nothing in them is replaced; the heartbeat is a loop timer. Each test
checks that the result is the same as the longer way's, never how long anything took.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from itertools import pairwise
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from tokenstream.config import Config, ServerConfig, UpstreamConfig
from tokenstream.dialects.openai_chat import parse_proxy_request
from tokenstream.engine import live
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.events import ModelName, Passthrough, ReplyError, ReplyEvent, TextDelta
from tokenstream.engine.live import LiveEvent, pace_live
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding
from tokenstream.errors import UpstreamStreamError
from tokenstream.server.app import create_app

from upstream_support import FakeUpstream, chunk, openai_text, parse_sse, reply_stream, sse

SMOOTH = PacingProfile(tokens_per_second=40, max_buffer_ms=750)
BURST = (
    "Streaming changes how an answer feels: the first words arrive at once and the rest "
    "flows at reading speed, evenly, whatever rhythm the model produced it in. "
) * 2
KEY_ENV = "TOKENSTREAM_TEST_UPSTREAM_KEY"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding())


class StrictClock:
    """A fake clock with the real clocks' contract: a deadline already past returns at once,
    without giving the loop a turn (so nothing else runs in between), a later one moves time."""

    def __init__(self) -> None:
        self._now = 0.0
        self.deadlines: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        self.deadlines.append(deadline)
        if deadline <= self._now:
            return
        self._now = deadline
        await asyncio.sleep(0)


async def _items(*items: ReplyEvent | str) -> AsyncGenerator[ReplyEvent, None]:
    """A live source; a str is a ``TextDelta``."""
    for item in items:
        yield TextDelta(item) if isinstance(item, str) else item


async def _collect(events: AsyncGenerator[LiveEvent, None]) -> list[LiveEvent]:
    return [event async for event in events]


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The reader tasks ``pace_live`` starts: what they were handed."""
    started: list[dict[str, Any]] = []
    real = live.read_into

    async def spy(*args: Any, **kwargs: Any) -> None:
        started.append(kwargs)
        await real(*args, **kwargs)

    monkeypatch.setattr(live, "read_into", spy)
    return started


# -- the live stage -----------------------------------------------------------------------


async def test_a_long_first_text_keeps_whole_text_boundaries_and_order(
    tokenizer: Tokenizer, readers: list[dict[str, Any]]
) -> None:
    tool = Passthrough(delta={"tool_calls": [{"index": 0, "id": "call_1"}]})
    sent = await _collect(
        pace_live(_items(BURST, tool, " and after it."), tokenizer, SMOOTH, StrictClock())
    )
    # the reader was started after the first piece, with the rest of the sliced text
    assert len(readers) == 1
    assert BURST.endswith(readers[0]["pending"][0])
    pieces_before = sent[: sent.index(tool)]
    assert pieces_before == tokenizer.pieces(BURST)  # the slices did not move a boundary
    assert [e for e in sent[sent.index(tool) + 1 :]] == tokenizer.pieces(" and after it.")


async def test_the_catch_up_rule_sees_the_whole_burst_after_the_first_piece(
    tokenizer: Tokenizer,
) -> None:
    # BURST is ~60 tokens: at 40/s that is 1.5 s, more than max_buffer_ms (0.75 s), so the
    # whole burst must be spread evenly over 0.75 s. Had the second deadline been computed
    # from the first slice's tokens alone, the first gap would be the profile's 25 ms.
    clock = StrictClock()
    sent = await _collect(pace_live(_items(BURST), tokenizer, SMOOTH, clock))
    assert len(sent) == len(tokenizer.pieces(BURST))
    gaps = [b - a for a, b in pairwise(clock.deadlines)]
    assert clock.deadlines[0] == 0.0
    assert max(gaps) - min(gaps) < 1e-9
    assert clock.deadlines[-1] <= 0.75 + 1e-9
    assert gaps[0] < 0.025


async def test_a_reply_that_ends_before_its_first_piece_needs_no_reader(
    tokenizer: Tokenizer, readers: list[dict[str, Any]]
) -> None:
    sent = await _collect(
        pace_live(_items(ModelName("m"), "Hi"), tokenizer, SMOOTH, StrictClock())
    )
    assert sent == [ModelName("m"), Piece("Hi")]  # "Hi" final at the source's end
    assert readers == []


async def test_an_error_before_the_first_piece_comes_after_the_text_before_it(
    tokenizer: Tokenizer,
) -> None:
    async def failing() -> AsyncGenerator[ReplyEvent, None]:
        yield TextDelta("Partial")
        raise UpstreamStreamError("gone", code="upstream_disconnected")

    received = [event async for event in pace_live(failing(), tokenizer, SMOOTH, StrictClock())]
    assert received == [
        Piece("Partial"), ReplyError("gone", "upstream_error", "upstream_disconnected")
    ]


async def test_leaving_before_the_first_piece_closes_the_source(tokenizer: Tokenizer) -> None:
    closed = asyncio.Event()
    gate = asyncio.Event()

    async def silent() -> AsyncGenerator[ReplyEvent, None]:
        try:
            await gate.wait()
            yield TextDelta("never")
        finally:
            closed.set()

    events = pace_live(silent(), tokenizer, SMOOTH, StrictClock())
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await events.aclose()
    assert closed.is_set()


@pytest.mark.parametrize(
    "profile",
    [PacingProfile(tokens_per_second=40, ttft_ms=200), PacingProfile(chunk_tokens=3)],
    ids=["ttft", "chunks"],
)
async def test_profiles_whose_first_event_may_wait_read_through_the_reader(
    tokenizer: Tokenizer, profile: PacingProfile, readers: list[dict[str, Any]]
) -> None:
    events = pace_live(_items("One two", " three four"), tokenizer, profile, FakeClock())
    first = await anext(events)
    assert isinstance(first, Piece)
    assert len(readers) == 1  # started before the first event
    assert readers[0].get("pending") is None
    rest = await _collect(events)
    assert first.text + "".join(e.text for e in rest if isinstance(e, Piece)) == (
        "One two three four"
    )


# -- the request ----------------------------------------------------------------------------


def test_the_clients_bytes_are_kept_when_nothing_is_replaced() -> None:
    raw = b'{"stream": true, "model": "m", "messages": [{"role": "user", "content": "caf\\u00e9"}]}'
    assert parse_proxy_request(raw, None).raw is raw
    assert parse_proxy_request(b" \n" + raw, None).raw is not None  # leading whitespace


@pytest.mark.parametrize(
    ("raw", "override"),
    [
        (b'{"model": "m", "stream": true, "tokenstream": {"profile": "smooth"}}', None),
        (b'{"model": "m", "stream": true}', "forced"),
        (b'{"model": "forced", "model": "m", "stream": true}', "forced"),
        ('\ufeff{"model": "m", "stream": true}'.encode(), None),
    ],
    ids=["tokenstream-object", "model-override", "model-twice", "byte-order-mark"],
)
def test_the_body_is_encoded_again_when_something_is_replaced(
    raw: bytes, override: str | None
) -> None:
    proxied = parse_proxy_request(raw, override)
    assert proxied.raw is None
    assert "tokenstream" not in proxied.body
    if override is not None:
        assert proxied.body["model"] == override


def _proxy_app(base_url: str, *, heartbeat_s: float | None) -> web.Application:
    """tokenstream in front of ``base_url`` with the ``instant`` profile, on a fake clock."""
    config = Config(
        server=ServerConfig(heartbeat_s=heartbeat_s),
        upstream=UpstreamConfig(base_url=base_url, api_key_env=KEY_ENV, profile="instant"),
    )
    return create_app(config, clock=FakeClock())


async def test_the_upstream_gets_the_clients_bytes_or_the_changed_body(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = FakeUpstream()
    received: list[bytes] = []

    async def behaviour(request: web.Request, _: FakeUpstream) -> web.StreamResponse:
        received.append(await request.read())  # read (and kept) by FakeUpstream already
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(reply_stream(["Hello", " there"]))
        await response.write_eof()
        return response

    upstream.behaviour = behaviour
    server = await aiohttp_server(upstream.app())
    monkeypatch.setenv(KEY_ENV, "sk-test")
    client = await aiohttp_client(_proxy_app(str(server.make_url("/v1")), heartbeat_s=None))
    raw = b'{"stream":true,  "model":"m","messages":[{"role":"user","content":"caf\\u00e9"}]}'
    for body in (raw, raw[:-1] + b',"tokenstream":{"profile":"instant"}}'):
        response = await client.post(
            "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        assert openai_text(parse_sse(await response.read())) == "Hello there"
    assert received[0] == raw  # as it came: spacing and escapes kept
    assert json.loads(received[1]) == json.loads(raw)  # the tokenstream object taken out


# -- the heartbeat ----------------------------------------------------------------------------


async def test_heartbeats_repeat_through_a_long_silence_and_stop_with_the_stream(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = FakeUpstream()
    gate = asyncio.Event()

    async def behaviour(request: web.Request, _: FakeUpstream) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(chunk(role=True)))
        await gate.wait()  # silent until the test has seen its pings
        await response.write(reply_stream(["Done", "."]))
        await response.write_eof()
        return response

    upstream.behaviour = behaviour
    server = await aiohttp_server(upstream.app())
    monkeypatch.setenv(KEY_ENV, "sk-test")
    client = await aiohttp_client(_proxy_app(str(server.make_url("/v1")), heartbeat_s=0.02))
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    for _ in range(3):
        event = await asyncio.wait_for(response.content.readuntil(b"\n"), 10)
        assert event == b": ping\n"
    gate.set()
    assert openai_text(parse_sse(await response.read())) == "Done."
    pings = [t for t in asyncio.all_tasks() if "_send_ping" in repr(t.get_coro())]
    assert pings == []
