"""BucketClock: shared timers per millisecond, driven by a fake loop (no wall-clock sleeping)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tokenstream.app import STATE, create_app
from tokenstream.pacer import PacingProfile, pace
from tokenstream.scheduler import BucketClock
from tokenstream.tokenizer import Piece


class _Handle:
    def __init__(self, when: float, callback: Any, args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimerLoop:
    """The loop surface BucketClock uses; time moves only when the test advances it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.handles: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def is_running(self) -> bool:
        return True

    def call_at(self, when: float, callback: Any, *args: Any) -> _Handle:
        handle = _Handle(when, callback, args)
        self.handles.append(handle)
        return handle

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    @property
    def armed(self) -> list[float]:
        return sorted(h.when for h in self.handles if not h.cancelled)

    async def fire_next(self, late_by: float = 0.0) -> None:
        """Fire the earliest timer ``late_by`` seconds after its time (a busy loop)."""
        handle = min((h for h in self.handles if not h.cancelled), key=lambda h: h.when)
        self.handles.remove(handle)
        self.now = max(self.now, handle.when + late_by)
        handle.callback(*handle.args)
        for _ in range(5):
            await asyncio.sleep(0)

    async def advance_to(self, until: float) -> None:
        """Fire every timer due by ``until`` in order, letting the woken tasks run."""
        while True:
            due = [h for h in self.handles if not h.cancelled and h.when <= until]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.handles.remove(handle)
            self.now = handle.when
            handle.callback(*handle.args)
            for _ in range(5):
                await asyncio.sleep(0)
        self.now = until
        for _ in range(5):
            await asyncio.sleep(0)


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


async def test_pace_over_the_bucket_clock_keeps_the_schedule_to_the_millisecond() -> None:
    loop = FakeTimerLoop(start=100.0003)
    clock = BucketClock(loop=loop)
    profile = PacingProfile(tokens_per_second=50, ttft_ms=0, jitter=0)

    async def pieces() -> AsyncIterator[Piece]:
        for text in ["a", " b", " c", " d"]:
            yield Piece(text)

    arrivals: list[float] = []

    async def consume() -> None:
        async for _ in pace(pieces(), profile, clock):
            arrivals.append(clock.now())

    task = asyncio.ensure_future(consume())
    await _settle()
    await loop.advance_to(101.0)
    await task
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


# ---------------------------------------------------------------- turns for new streams


async def _fall_behind(loop: FakeTimerLoop, clock: BucketClock) -> list[str]:
    """Streams due every millisecond, and a pass that runs 3 ms late."""
    called: list[str] = []
    for ms in range(1, 40):
        clock.call_at(ms / 1000, lambda ms=ms: called.append(f"event {ms}"))
    await loop.fire_next(late_by=0.003)
    assert clock.behind
    return called


async def _start(clock: BucketClock, name: str, order: list[str],
                 max_wait: float = 0.25) -> float | None:
    waited = await clock.wait_turn(max_wait)
    order.append(name)
    return waited


async def test_a_start_goes_through_at_once_while_the_timers_are_on_time() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    clock.call_at(0.001, lambda: None)
    clock.call_at(0.005, lambda: None)
    await loop.fire_next(late_by=0.0005)  # within BEHIND_AFTER_S
    assert not clock.behind
    assert await clock.wait_turn(0.25) is None
    assert clock.waiting_turns == 0


async def test_while_behind_a_start_waits_for_an_on_time_pass() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    called = await _fall_behind(loop, clock)  # now = 0.004
    order: list[str] = []
    start = asyncio.ensure_future(_start(clock, "start", order))
    await _settle()
    assert order == [] and clock.waiting_turns == 1
    await loop.fire_next(late_by=0.002)  # still late: nobody goes through
    assert order == [] and clock.behind
    await loop.fire_next()  # on time
    assert order == ["start"]
    assert not clock.behind
    assert await start == pytest.approx(loop.now - 0.004)
    assert called[:3] == ["event 1", "event 2", "event 3"]  # the events went first


async def test_waiting_starts_go_through_in_order_one_more_per_on_time_pass() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    await _fall_behind(loop, clock)
    order: list[str] = []
    starts = [asyncio.ensure_future(_start(clock, f"s{i}", order)) for i in range(7)]
    await _settle()
    assert clock.waiting_turns == 7
    await loop.fire_next()
    assert order == ["s0"]
    await loop.fire_next()
    assert order == ["s0", "s1", "s2"]
    await loop.fire_next(late_by=0.003)  # late again: none, and back to one a pass
    assert len(order) == 3
    await loop.fire_next()
    assert order == ["s0", "s1", "s2", "s3"]
    await loop.fire_next()
    assert order == [f"s{i}" for i in range(6)]
    await loop.fire_next()
    assert order == [f"s{i}" for i in range(7)]
    assert clock.waiting_turns == 0
    await asyncio.gather(*starts)


async def test_a_start_that_arrives_behind_others_waits_its_turn_even_on_time() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    await _fall_behind(loop, clock)
    order: list[str] = []
    first = asyncio.ensure_future(_start(clock, "first", order))
    await _settle()
    clock._behind = False  # as after an on-time pass that let nobody in yet
    second = asyncio.ensure_future(_start(clock, "second", order))
    await _settle()
    assert order == [] and clock.waiting_turns == 2
    await loop.fire_next()
    await loop.fire_next()
    assert order == ["first", "second"]
    await asyncio.gather(first, second)


async def test_a_start_waits_no_longer_than_max_wait() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    await _fall_behind(loop, clock)  # now = 0.004
    order: list[str] = []
    start = asyncio.ensure_future(_start(clock, "start", order, max_wait=0.010))
    await _settle()
    while not order:
        await loop.fire_next(late_by=0.003)  # every pass late (the give-up timer too)
    assert 0.010 <= await start < 0.0131
    assert clock.waiting_turns == 0


async def test_a_cancelled_start_leaves_the_queue() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    await _fall_behind(loop, clock)
    order: list[str] = []
    leaving = asyncio.ensure_future(_start(clock, "leaving", order))
    staying = asyncio.ensure_future(_start(clock, "staying", order))
    await _settle()
    leaving.cancel()
    await _settle()
    assert clock.waiting_turns == 1
    await loop.fire_next()
    assert order == ["staying"]
    assert leaving.cancelled()
    await staying


async def test_a_waiting_start_brings_a_pass_within_the_next_bucket() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    clock.call_at(0.001, lambda: None)
    clock.call_at(0.500, lambda: None)  # the next stream's event is far away
    await loop.fire_next(late_by=0.003)
    order: list[str] = []
    start = asyncio.ensure_future(_start(clock, "start", order))
    await _settle()
    assert min(loop.armed) == pytest.approx(0.005)  # now 0.004: the next bucket
    await loop.fire_next()
    assert order == ["start"]
    assert await start == pytest.approx(0.001)


async def test_nothing_is_behind_once_no_timer_is_left() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    clock.call_at(0.001, lambda: None)
    await loop.fire_next(late_by=0.010)  # late, and the last timer
    assert not clock.behind
    assert await clock.wait_turn(0.25) is None
    clock.call_at(0.020, lambda: None)
    left = clock.call_at(0.050, lambda: None)
    await loop.fire_next(late_by=0.010)
    assert clock.behind  # with a timer left to be late for
    left.cancel()
    assert not clock.behind


async def test_max_wait_zero_never_waits() -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    await _fall_behind(loop, clock)
    assert await clock.wait_turn(0) is None
