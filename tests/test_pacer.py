"""Exact schedules: every deadline is checked to the float.

``timed`` is the schedule of a reply that is all there (what ``playout`` writes at its
deadlines); ``Schedule`` takes one piece at a time, with its arrival (the live path); the
live path's sleeping is checked with a fake clock.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import AsyncGenerator

import pytest
from pydantic import ValidationError

from tokenstream.engine.clock import FakeClock
from tokenstream.engine.events import ReplyEvent, TextDelta
from tokenstream.engine.live import pace_live
from tokenstream.engine.pacer import PacingProfile, Schedule, timed
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding


def _times(profile: PacingProfile, pieces: list[Piece], start: float = 100.0) -> list[float]:
    return [deadline for deadline, _ in timed(pieces, profile, start)]


WORDS = [Piece(w) for w in ["Hello", ",", " world", " and", " more"]]


def test_rate_and_ttft() -> None:
    profile = PacingProfile(tokens_per_second=50, ttft_ms=300)
    assert _times(profile, WORDS) == pytest.approx(
        [100.0 + 0.3 + i * 0.02 for i in range(len(WORDS))], abs=1e-9
    )


def test_piece_of_k_tokens_waits_k_intervals() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0)
    pieces = [Piece("a"), Piece("懒", 3), Piece("b")]
    assert _times(profile, pieces, start=0.0) == pytest.approx([0.0, 0.3, 0.4], abs=1e-12)


def test_sentence_pause_only_before_whitespace() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, pause_ms=500)
    pieces = [Piece("End"), Piece("."), Piece(" Next"), Piece("3"), Piece("."), Piece("14")]
    times = _times(profile, pieces, start=0.0)
    assert times == pytest.approx([0.0, 0.1, 0.7, 0.8, 0.9, 1.0], abs=1e-12)


def test_fullwidth_punctuation_pauses_without_space() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, pause_ms=500)
    times = _times(profile, [Piece("好"), Piece("。"), Piece("你")], start=0.0)
    assert times == pytest.approx([0.0, 0.1, 0.7], abs=1e-12)


def test_newline_pause_overrides_sentence_pause() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, pause_ms=500, newline_pause_ms=200)
    times = _times(profile, [Piece("a"), Piece(".\n\n"), Piece("b")], start=0.0)
    assert times == pytest.approx([0.0, 0.1, 0.4], abs=1e-12)


def test_newline_pause_defaults_to_pause_ms() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, pause_ms=500)
    times = _times(profile, [Piece("a\n"), Piece("b")], start=0.0)
    assert times == pytest.approx([0.0, 0.6], abs=1e-12)


def test_chunking_groups_tokens_and_waits_for_all_of_them() -> None:
    profile = PacingProfile(tokens_per_second=10, ttft_ms=0, chunk_tokens=3)
    pieces = [Piece(str(i)) for i in range(7)]
    sent = [(p, t) for t, p in timed(pieces, profile, 0.0)]
    assert [p for p, _ in sent] == [Piece("012", 3), Piece("345", 3), Piece("6", 1)]
    assert [t for _, t in sent] == pytest.approx([0.0, 0.3, 0.4], abs=1e-12)


def test_unpaced_sends_everything_at_ttft() -> None:
    profile = PacingProfile(tokens_per_second=None, ttft_ms=250)
    assert _times(profile, WORDS, start=0.0) == [0.25] * len(WORDS)


def test_zero_rate_means_unpaced() -> None:
    assert PacingProfile(tokens_per_second=0).tokens_per_second is None


def test_jitter_is_reproducible_by_seed_and_keeps_the_mean() -> None:
    profile = PacingProfile(tokens_per_second=100, ttft_ms=0, jitter=0.5, seed=42)
    pieces = [Piece("x")] * 2001
    first = _times(profile, pieces, start=0.0)
    second = _times(profile, pieces, start=0.0)
    assert first == second
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert len(set(gaps)) > 100  # really jittered
    assert min(gaps) > 0
    assert statistics.fmean(gaps) == pytest.approx(0.01, rel=0.05)
    other = _times(profile.model_copy(update={"seed": 7}), pieces, start=0.0)
    assert other != first


async def test_deadlines_are_absolute_so_a_late_wake_up_does_not_shift_later_events() -> None:
    class LateOnceClock(FakeClock):
        async def sleep_until(self, deadline: float) -> None:
            await super().sleep_until(deadline)
            if len(self.sleeps) == 2:
                self.advance(0.055)  # the second wake-up comes 55 ms late

    async def reply() -> AsyncGenerator[ReplyEvent, None]:
        yield TextDelta("one two three four five six")  # six pieces, all there at 0 s

    profile = PacingProfile(tokens_per_second=50, ttft_ms=0)
    clock = LateOnceClock(0.0)
    tokenizer = Tokenizer(load_encoding())
    sent = [event async for event in pace_live(reply(), tokenizer, profile, clock)]
    assert len(sent) == 6
    assert clock.sleeps == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.10], abs=1e-12)


def test_live_source_piece_is_never_due_before_it_arrived() -> None:
    schedule = Schedule(PacingProfile(tokens_per_second=10, ttft_ms=0), start=0.0)
    # the next pieces arrive a second later (``available_at``: when each arrived)
    arrivals = [(Piece("a"), 0.0), (Piece("b"), 1.0), (Piece("c"), 1.0)]
    times = [schedule.next_deadline(piece, arrived) for piece, arrived in arrivals]
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
