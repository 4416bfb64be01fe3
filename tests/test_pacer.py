"""Exact schedules with a fake clock: every deadline is checked to the float."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import AsyncIterator, Iterable

import pytest
from pydantic import ValidationError

from tokenstream.engine.clock import FakeClock
from tokenstream.engine.pacer import PacingProfile, Schedule, pace
from tokenstream.engine.tokenizer import Piece


async def _aiter(pieces: Iterable[Piece]) -> AsyncIterator[Piece]:
    for piece in pieces:
        yield piece


async def _times(profile: PacingProfile, pieces: list[Piece], start: float = 100.0) -> list[float]:
    clock = FakeClock(start)
    sent = []
    async for _ in pace(_aiter(pieces), profile, clock):
        sent.append(clock.now())
    return sent


WORDS = [Piece(w) for w in ["Hello", ",", " world", " and", " more"]]


async def test_rate_and_ttft() -> None:
    profile = PacingProfile(tokens_per_second=50, ttft_ms=300)
    assert await _times(profile, WORDS) == pytest.approx(
        [100.0 + 0.3 + i * 0.02 for i in range(len(WORDS))], abs=1e-9
    )


async def test_piece_of_k_tokens_waits_k_intervals() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0)
    pieces = [Piece("a"), Piece("懒", 3), Piece("b")]
    assert await _times(profile, pieces, start=0.0) == pytest.approx([0.0, 0.3, 0.4], abs=1e-12)


async def test_sentence_pause_only_before_whitespace() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, pause_ms=500)
    pieces = [Piece("End"), Piece("."), Piece(" Next"), Piece("3"), Piece("."), Piece("14")]
    times = await _times(profile, pieces, start=0.0)
    assert times == pytest.approx([0.0, 0.1, 0.7, 0.8, 0.9, 1.0], abs=1e-12)


async def test_fullwidth_punctuation_pauses_without_space() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, pause_ms=500)
    times = await _times(profile, [Piece("好"), Piece("。"), Piece("你")], start=0.0)
    assert times == pytest.approx([0.0, 0.1, 0.7], abs=1e-12)


async def test_newline_pause_overrides_sentence_pause() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, pause_ms=500, newline_pause_ms=200)
    times = await _times(profile, [Piece("a"), Piece(".\n\n"), Piece("b")], start=0.0)
    assert times == pytest.approx([0.0, 0.1, 0.4], abs=1e-12)


async def test_newline_pause_defaults_to_pause_ms() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, pause_ms=500)
    times = await _times(profile, [Piece("a\n"), Piece("b")], start=0.0)
    assert times == pytest.approx([0.0, 0.6], abs=1e-12)


async def test_chunking_groups_tokens_and_waits_for_all_of_them() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, chunk_tokens=3)
    clock = FakeClock(0.0)
    pieces = [Piece(str(i)) for i in range(7)]
    sent = [(p, clock.now()) async for p in pace(_aiter(pieces), profile, clock)]
    assert [p for p, _ in sent] == [Piece("012", 3), Piece("345", 3), Piece("6", 1)]
    assert [t for _, t in sent] == pytest.approx([0.0, 0.3, 0.4], abs=1e-12)


async def test_unpaced_sends_everything_at_ttft() -> None:
    profile = PacingProfile(tokens_per_second=None, ttft_ms=250)
    assert await _times(profile, WORDS, start=0.0) == [0.25] * len(WORDS)


def test_zero_rate_means_unpaced() -> None:
    assert PacingProfile(tokens_per_second=0).tokens_per_second is None


async def test_jitter_is_reproducible_by_seed_and_keeps_the_mean() -> None:
    profile = PacingProfile(tokens_per_second=100, ttft_ms=0, jitter=0.5, seed=42)
    pieces = [Piece("x")] * 2001
    first = await _times(profile, pieces, start=0.0)
    second = await _times(profile, pieces, start=0.0)
    assert first == second
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert len(set(gaps)) > 100  # really jittered
    assert min(gaps) > 0
    assert statistics.fmean(gaps) == pytest.approx(0.01, rel=0.05)
    other = await _times(profile.model_copy(update={"seed": 7}), pieces, start=0.0)
    assert other != first


async def test_deadlines_are_absolute_so_a_late_wake_up_does_not_shift_later_events() -> None:
    class LateOnceClock(FakeClock):
        async def sleep_until(self, deadline: float) -> None:
            await super().sleep_until(deadline)
            if len(self.sleeps) == 2:
                self.advance(0.055)  # the second wake-up comes 55 ms late

    profile = PacingProfile(tokens_per_second=50, ttft_ms=0)
    clock = LateOnceClock(0.0)
    async for _ in pace(_aiter([Piece("x")] * 6), profile, clock):
        pass
    assert clock.sleeps == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.10], abs=1e-12)


async def test_live_source_piece_is_never_due_before_it_arrived() -> None:
    clock = FakeClock(0.0)

    async def slow_source() -> AsyncIterator[Piece]:
        yield Piece("a")
        clock.advance(1.0)  # the next piece arrives a second later
        yield Piece("b")
        yield Piece("c")

    profile = PacingProfile(tokens_per_second=10, ttft_ms=0)
    times = [clock.now() async for _ in pace(slow_source(), profile, clock, live=True)]
    assert times == pytest.approx([0.0, 1.0, 1.1], abs=1e-12)


def test_schedule_is_pure() -> None:
    schedule = Schedule(PacingProfile(tokens_per_second=4, ttft_ms=1000), start=10.0)
    assert [schedule.next_deadline(Piece("x")) for _ in range(3)] == [11.0, 11.25, 11.5]


@pytest.mark.parametrize(
    "field,value",
    [
        ("tokens_per_second", -1),
        ("tokens_per_second", float("nan")),
        ("tokens_per_second", float("inf")),
        ("ttft_ms", -5),
        ("jitter", -0.1),
        ("jitter", float("nan")),
        ("chunk_tokens", 0),
        ("pause_ms", -1),
        ("bogus", 1),
    ],
)
def test_invalid_profile_values_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        PacingProfile(**{field: value})
