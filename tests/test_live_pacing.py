"""The live stage and the pacer's catch-up rule, on fake clocks: exact, instant, no wall clock."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncGenerator
from itertools import pairwise
from typing import Any

import pytest

from tokenstream.engine.clock import FakeClock
from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReplyError,
    ReplyEvent,
    TextDelta,
)
from tokenstream.engine.live import READ_AHEAD_TOKENS, LiveEvent, pace_live
from tokenstream.engine.pacer import PacingProfile, Schedule, catch_up_gap
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding
from tokenstream.errors import UpstreamStreamError

from upstream_support import SimClock

SMOOTH = PacingProfile(tokens_per_second=40, max_buffer_ms=750)
LONG_TEXT = (
    "Streaming changes how an answer feels. When a reply appears all at once after several "
    "seconds, the wait feels longer than it was; when the same reply starts after a few "
    "hundred milliseconds and flows at reading speed, people start reading at once. "
) * 3


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding())


async def _items(*items: ReplyEvent | str) -> AsyncGenerator[ReplyEvent, None]:
    """A live source; a str is a ``TextDelta``."""
    for item in items:
        yield TextDelta(item) if isinstance(item, str) else item


async def _timed(
    clock: SimClock | FakeClock, script: list[tuple[float, str]]
) -> AsyncGenerator[ReplyEvent, None]:
    """A live source: each text at its time on ``clock``."""
    for at, text in script:
        await clock.sleep_until(at)
        yield TextDelta(text)


async def _collect(
    events: AsyncGenerator[LiveEvent, None], clock: Any
) -> list[tuple[float, LiveEvent]]:
    out = []
    async for event in events:
        out.append((clock.now(), event))
    return out


# -- the rule, pure -----------------------------------------------------------------------


def test_catch_up_gap_spreads_a_burst_over_the_buffer_limit() -> None:
    # 30 tokens arrived at 0; at base 0 with 1.5 s allowed: 20 tokens/s, 1 token = 50 ms
    assert catch_up_gap(1, 0.0, [(0.0, 30)], 1.5) == pytest.approx(0.05)
    # a later arrival with more room does not ask for more than the oldest does
    assert catch_up_gap(1, 0.0, [(0.0, 30), (1.0, 40)], 1.5) == pytest.approx(0.05)
    # ... unless its own tokens need it: 100 tokens by 2.5 s -> 40/s
    assert catch_up_gap(2, 0.0, [(0.0, 30), (1.0, 100)], 1.5) == pytest.approx(0.05)


def test_catch_up_gap_is_zero_when_already_late_and_infinite_when_empty() -> None:
    assert catch_up_gap(1, 2.0, [(0.0, 5)], 1.5) == 0.0
    assert catch_up_gap(1, 0.0, [], 1.5) == float("inf")


def test_schedule_with_backlog_never_sends_early_or_later_than_the_limit() -> None:
    schedule = Schedule(PacingProfile(tokens_per_second=10, max_buffer_ms=1000), start=0.0)
    # 50 tokens arrived at 0 s; at 10 tokens/s they would take 5 s, the limit is 1 s
    deadlines = [
        schedule.next_deadline(Piece("x"), 0.0, [(0.0, remaining)])
        for remaining in range(50, 0, -1)
    ]
    assert deadlines[0] == 0.0
    assert max(deadlines) <= 1.0 + 1e-9
    gaps = [b - a for a, b in pairwise(deadlines)]
    assert max(gaps) - min(gaps) < 1e-9  # perfectly even


def test_schedule_without_max_buffer_ignores_the_backlog() -> None:
    schedule = Schedule(PacingProfile(tokens_per_second=10), start=0.0)
    times = [schedule.next_deadline(Piece("x"), 0.0, [(0.0, 1000)]) for _ in range(3)]
    assert times == pytest.approx([0.0, 0.1, 0.2])


# -- the live stage -----------------------------------------------------------------------


async def test_a_burst_is_spread_evenly_within_max_buffer(tokenizer: Tokenizer) -> None:
    clock = FakeClock()
    sent = await _collect(pace_live(_items(LONG_TEXT), tokenizer, SMOOTH, clock), clock)
    pieces = [event for _, event in sent]
    assert pieces == tokenizer.pieces(LONG_TEXT)  # same boundaries as the whole text
    times = [t for t, _ in sent]
    assert times[0] == 0.0
    assert times[-1] <= 0.75 + 1e-9  # never more than max_buffer_ms behind
    gaps = [b - a for a, b in pairwise(times)]
    assert max(gaps) == pytest.approx(min(gaps))  # an even cadence, faster than 40/s
    assert len(pieces) / 0.75 > 40


async def test_a_small_burst_goes_at_the_profile_rate(tokenizer: Tokenizer) -> None:
    clock = FakeClock()
    text = "Short and sweet reply here."
    sent = await _collect(pace_live(_items(text), tokenizer, SMOOTH, clock), clock)
    times = [t for t, _ in sent]
    assert times == pytest.approx([i * 0.025 for i in range(len(times))])


async def test_without_max_buffer_the_profile_rate_holds_however_long(
    tokenizer: Tokenizer,
) -> None:
    clock = FakeClock()
    profile = PacingProfile(tokens_per_second=40)
    sent = await _collect(pace_live(_items(LONG_TEXT), tokenizer, profile, clock), clock)
    times = [t for t, _ in sent]
    assert times == pytest.approx([i * 0.025 for i in range(len(times))])


async def test_bursty_upstream_becomes_an_even_cadence(tokenizer: Tokenizer) -> None:
    """20-token bursts every 0.5 s (40 tokens/s on average) -> about one token per 25 ms."""
    words = tokenizer.pieces(LONG_TEXT)
    bursts = ["".join(p.text for p in words[i : i + 20]) for i in range(0, len(words), 20)]
    script: list[tuple[float, str]] = [(0.5 * i, b) for i, b in enumerate(bursts)]
    clock = SimClock()
    sent = await clock.run(_collect(pace_live(_timed(clock, script), tokenizer, SMOOTH, clock),
                                    clock))
    assert "".join(e.text for _, e in sent if isinstance(e, Piece)) == LONG_TEXT
    times = [t for t, _ in sent]
    gaps = [b - a for a, b in pairwise(times)]
    input_gaps = [0.5] + [0.0] * 19  # what the upstream's rhythm looks like per token
    assert max(gaps) < 0.1 < max(input_gaps)
    assert statistics.pstdev(gaps) < statistics.pstdev(input_gaps) / 5
    # never before the text arrived, never later than max_buffer_ms after it was final
    for (at, _), burst_index in zip(sent, _burst_of(sent, bursts), strict=True):
        assert at >= 0.5 * burst_index - 1e-9
        # held-back text is final when the next burst (or the end) arrives
        final_at = 0.5 * min(burst_index + 1, len(bursts) - 1)
        assert at <= final_at + 0.75 + 1e-9


def _burst_of(sent: list[tuple[float, LiveEvent]], bursts: list[str]) -> list[int]:
    """For each sent piece, the burst its last character arrived in."""
    ends = []
    total = 0
    for burst in bursts:
        total += len(burst)
        ends.append(total)
    out = []
    position = 0
    for _, event in sent:
        assert isinstance(event, Piece)
        position += len(event.text)
        out.append(next(i for i, end in enumerate(ends) if position <= end))
    return out


async def test_slow_upstream_is_passed_on_as_it_arrives(tokenizer: Tokenizer) -> None:
    words = ["One", " two", " three", " four", " five", " six"]
    script: list[tuple[float, str]] = [(1.0 * i, w) for i, w in enumerate(words)]
    clock = SimClock()
    sent = await clock.run(_collect(pace_live(_timed(clock, script), tokenizer, SMOOTH, clock),
                                    clock))
    # each word is final when the next one starts (the tokenizer holds the last match back);
    # the last one when the upstream ends, at 5.0, and it then waits its interval
    assert [e.text for _, e in sent] == words
    assert [t for t, _ in sent] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0, 5.025])


async def test_passthrough_keeps_its_place_and_flushes_held_text(tokenizer: Tokenizer) -> None:
    tool = Passthrough(delta={"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})
    clock = FakeClock()
    sent = await _collect(
        pace_live(
            _items(ModelName("m"), "Let me check", tool, Finish("x")),
            tokenizer,
            SMOOTH,
            clock,
        ),
        clock,
    )
    events = [e for _, e in sent]
    assert events == [
        ModelName("m"), Piece("Let"), Piece(" me"), Piece(" check"), tool,
        Finish("x"),
    ]
    times = [t for t, _ in sent]
    assert times[-3:] == [0.05, 0.05, 0.05]  # passthrough goes right after the text before it


async def test_error_comes_after_the_text_that_arrived_before_it(tokenizer: Tokenizer) -> None:
    async def failing() -> AsyncGenerator[ReplyEvent, None]:
        yield TextDelta("Partial answer")
        raise UpstreamStreamError("gone", code="upstream_disconnected")

    clock = FakeClock()
    received = [event async for event in pace_live(failing(), tokenizer, SMOOTH, clock)]
    assert "".join(e.text for e in received if isinstance(e, Piece)) == "Partial answer"
    assert received[-1] == ReplyError("gone", "upstream_error", "upstream_disconnected")


async def test_closing_the_stage_cancels_the_reader_and_closes_the_source(
    tokenizer: Tokenizer,
) -> None:
    closed = asyncio.Event()
    gate = asyncio.Event()

    async def endless() -> AsyncGenerator[ReplyEvent, None]:
        try:
            yield TextDelta("first words of a reply that never ends")
            await gate.wait()
            yield TextDelta("never")
        finally:
            closed.set()

    clock = FakeClock()
    events = pace_live(endless(), tokenizer, SMOOTH, clock)
    first = await anext(events)
    assert isinstance(first, Piece)
    await events.aclose()
    assert closed.is_set()  # at once: no timer, no further read
    assert [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "read_into"] == []


async def test_chunks_merge_only_what_has_arrived(tokenizer: Tokenizer) -> None:
    profile = PacingProfile(tokens_per_second=10, chunk_tokens=4)
    script: list[tuple[float, str]] = [
        (0.0, "one two three four five six"),
        (10.0, " seven"),
        (20.0, " eight"),
    ]
    clock = SimClock()
    sent = await clock.run(_collect(pace_live(_timed(clock, script), tokenizer, profile, clock),
                                    clock))
    assert [(t, e.text) for t, e in sent if isinstance(e, Piece)] == [
        (0.0, "one two three four"),
        (0.1, " five"),  # all that is final at 0 s: sent without waiting to fill a chunk
        (10.0, " six"),  # final when " seven" starts
        (20.0, " seven eight"),  # final at the end
    ]


async def test_the_reader_stops_reading_when_it_is_far_enough_ahead(tokenizer: Tokenizer) -> None:
    """An upstream faster than the pace is held back (by TCP, in the server), not buffered."""
    pulled = 0

    async def endless() -> AsyncGenerator[ReplyEvent, None]:
        nonlocal pulled
        while True:
            pulled += 1
            yield TextDelta(" word" * 100)  # 100 tokens
            await asyncio.sleep(0)

    clock = FakeClock()
    profile = PacingProfile(tokens_per_second=1, ttft_ms=1)  # the reader starts at once
    events = pace_live(endless(), tokenizer, profile, clock)
    first = await anext(events)
    assert isinstance(first, Piece)
    for _ in range(2000):  # the reader runs as far as it may
        await asyncio.sleep(0)
    assert READ_AHEAD_TOKENS // 100 <= pulled <= READ_AHEAD_TOKENS // 100 + 2
    for _ in range(300):  # taking what it buffered makes room again
        await anext(events)
    for _ in range(200):
        await asyncio.sleep(0)
    assert pulled > READ_AHEAD_TOKENS // 100 + 2
    await events.aclose()
