"""BucketClock: shared timers per millisecond, driven by a fake loop (no wall-clock sleeping)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator

import pytest

from tokenstream.engine.events import ReplyEvent, TextDelta
from tokenstream.engine.live import pace_live
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.scheduler import BucketClock
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding
from tokenstream.server.app import STATE, create_app

from support import FakeTimerLoop


async def _sleeper(clock: BucketClock, deadline: float, woke: list[tuple[float, float]]) -> None:
    await clock.sleep_until(deadline)
    woke.append((deadline, clock.now()))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_sleepers_in_one_millisecond_wake_together_from_one_timer() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    woke: list[tuple[float, float]] = []
    deadlines = [0.0101, 0.0104, 0.0109, 0.0110, 0.0111]
    tasks = [asyncio.ensure_future(_sleeper(clock, d, woke)) for d in deadlines]
    await _settle()
    assert loop.armed == pytest.approx([0.011])  # for the earliest bucket only
    assert clock.pending_timers == 2
    await loop.advance_to(0.0115)
    assert sorted(d for d, _ in woke) == deadlines[:4]
    assert all(t == pytest.approx(0.011) for _, t in woke)
    assert loop.armed == pytest.approx([0.012])
    await loop.advance_to(0.02)
    assert [d for d, _ in woke][-1] == 0.0111
    assert clock.pending_timers == 0
    await asyncio.gather(*tasks)


@pytest.mark.parametrize("deadline", [0.007, 0.0070001, 1.25, 12345.6789, 0.0203])
async def test_never_wakes_before_the_deadline_nor_a_bucket_after(deadline: float) -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    woke: list[tuple[float, float]] = []
    task = asyncio.ensure_future(_sleeper(clock, deadline, woke))
    await _settle()
    await loop.advance_to(deadline + 1)
    await task
    (_, at), = woke
    assert deadline - 1e-9 <= at <= deadline + 0.001


async def test_thousands_of_sleepers_keep_one_loop_timer() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    woke: list[tuple[float, float]] = []
    deadlines = [0.5 - 0.0003 * i for i in range(1000)]  # 1000 buckets, latest first
    tasks = [asyncio.ensure_future(_sleeper(clock, d, woke)) for d in deadlines]
    await _settle()
    assert len(loop.armed) == 1
    await loop.advance_to(1.0)
    await asyncio.gather(*tasks)
    assert sorted(d for d, _ in woke) == sorted(deadlines)
    assert all(d - 1e-9 <= at <= d + 0.001 for d, at in woke)
    assert loop.armed == []


async def test_cancelled_calls_leave_their_bucket_and_the_last_one_the_timer() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    called: list[str] = []
    first = clock.call_at(0.0101, lambda: called.append("first"))
    second = clock.call_at(0.0205, lambda: called.append("second"))
    assert clock.pending_timers == 2
    first.cancel()
    assert clock.pending_timers == 1
    second.cancel()
    assert clock.pending_timers == 0
    assert loop.armed == []
    kept = clock.call_at(0.0305, lambda: called.append("kept"))
    await loop.advance_to(0.05)
    assert called == ["kept"]
    kept.cancel()  # after it ran: nothing to do


async def test_a_whole_millisecond_deadline_stays_in_its_own_bucket() -> None:
    clock = BucketClock(loop=FakeTimerLoop())
    assert clock.bucket_of(0.007) == 7  # 0.007 / 0.001 is 7.000000000000001 in floats
    assert clock.bucket_of(0.0071) == 8


async def test_a_deadline_already_passed_returns_at_once_without_a_timer() -> None:
    loop = FakeTimerLoop(start=5.0)
    clock = BucketClock(loop=loop)
    await clock.sleep_until(4.0)
    await clock.sleep_until(5.0)
    assert loop.armed == []


async def test_a_cancelled_sleeper_is_skipped_and_the_others_wake() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    woke: list[tuple[float, float]] = []
    leaving = asyncio.ensure_future(_sleeper(clock, 0.0102, woke))
    staying = asyncio.ensure_future(_sleeper(clock, 0.0105, woke))
    await _settle()
    leaving.cancel()
    await loop.advance_to(0.02)
    await staying
    assert leaving.cancelled()
    assert [d for d, _ in woke] == [0.0105]


async def test_the_pacer_over_the_bucket_clock_keeps_the_schedule_to_the_millisecond() -> None:
    loop = FakeTimerLoop(start=100.0003)
    clock = BucketClock(loop=loop)
    profile = PacingProfile(tokens_per_second=50, ttft_ms=0, jitter=0)
    tokenizer = Tokenizer(load_encoding())

    async def reply() -> AsyncGenerator[ReplyEvent, None]:
        yield TextDelta("a b c d")  # four pieces, all there at the start

    arrivals: list[float] = []
    sent: list[Piece] = []

    async def consume() -> None:
        async for event in pace_live(reply(), tokenizer, profile, clock):
            assert isinstance(event, Piece)
            sent.append(event)
            arrivals.append(clock.now())

    task = asyncio.ensure_future(consume())
    await _settle()
    await loop.advance_to(101.0)
    await task
    assert [piece.text for piece in sent] == ["a", " b", " c", " d"]
    ideal = [100.0003 + 0.02 * i for i in range(4)]
    assert arrivals[0] == ideal[0]
    for got, want in zip(arrivals[1:], ideal[1:], strict=True):
        assert want - 1e-9 <= got <= want + 0.001
    gaps = [b - a for a, b in itertools.pairwise(arrivals[1:])]
    assert gaps == pytest.approx([0.02, 0.02], abs=1e-9)  # rounding is the same for all


async def test_a_new_running_loop_is_adopted() -> None:
    clock = BucketClock()
    before = clock.now()
    await clock.sleep_until(before - 1)  # on the test's loop
    assert clock.now() >= before


def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError, match="resolution"):
        BucketClock(resolution=0)


def test_the_app_paces_with_the_bucket_clock_by_default() -> None:
    assert isinstance(create_app()[STATE].clock, BucketClock)
