"""Pacer stage: token pieces -> the same pieces at scheduled times.

The schedule is pure arithmetic (``Schedule``); ``pace`` applies it with an injected clock.

Deadlines are absolute: event *i* is due at ``start + ttft + sum(gaps before i)`` on a
monotonic clock, so a late wake-up never shifts the events after it. A piece that carries
*k* tokens waits *k* intervals.

Jitter: each gap is multiplied by a log-normal factor ``exp(N(-s^2/2, s))`` with
``s = jitter``. Its mean is exactly 1, so jitter changes the rhythm but not the average
rate, and a gap can never become negative. The same ``seed`` gives the same schedule.

Pauses: ``pause_ms`` is added after sentence punctuation (``.!?`` followed by whitespace,
or the full-width ``。！？``), and ``newline_pause_ms`` (default: ``pause_ms``) after a
piece that contains a line break.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokenstream.clock import Clock
from tokenstream.tokenizer import Piece

__all__ = ["PacingProfile", "Schedule", "chunk_pieces", "pace"]

_SENTENCE_END = frozenset(".!?")
_FULLWIDTH_SENTENCE_END = frozenset("。！？")


class PacingProfile(BaseModel):
    """How a stream is timed. Every field can be overridden per request."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    description: str = ""
    tokens_per_second: float | None = Field(
        default=50.0, gt=0, le=100_000, description="null or 0 = unpaced (as fast as possible)"
    )
    ttft_ms: float = Field(default=0.0, ge=0, le=600_000, description="time to first token")
    jitter: float = Field(default=0.0, ge=0, le=3, description="sigma of the log-normal gap factor")
    seed: int | None = Field(default=None, description="same seed, same schedule; null = random")
    chunk_tokens: int = Field(default=1, ge=1, le=10_000, description="tokens per event")
    pause_ms: float = Field(default=0.0, ge=0, le=600_000, description="after sentence punctuation")
    newline_pause_ms: float | None = Field(
        default=None, ge=0, le=600_000, description="after a line break; null = pause_ms"
    )

    @field_validator("tokens_per_second", mode="before")
    @classmethod
    def _zero_means_unpaced(cls, value: object) -> object:
        return None if value == 0 else value

    @property
    def interval(self) -> float:
        """Seconds per token; 0 when unpaced."""
        return 0.0 if self.tokens_per_second is None else 1.0 / self.tokens_per_second


def _pause_between(profile: PacingProfile, previous: str, following: str) -> float:
    if "\n" in previous:
        pause = profile.newline_pause_ms
        return (profile.pause_ms if pause is None else pause) / 1000.0
    last = previous.rstrip(" ")[-1:]
    if last in _FULLWIDTH_SENTENCE_END or (
        last in _SENTENCE_END and following[:1].isspace()
    ):
        return profile.pause_ms / 1000.0
    return 0.0


class Schedule:
    """Computes absolute deadlines, one piece at a time; no I/O, no sleeping."""

    def __init__(self, profile: PacingProfile, start: float, rng: random.Random | None = None):
        self.profile = profile
        self.start = start
        self._rng = rng if rng is not None else random.Random(profile.seed)
        self._sigma = profile.jitter
        self._previous_text: str | None = None
        self._previous_deadline = start

    def _gap_factor(self) -> float:
        if self._sigma == 0:
            return 1.0
        return self._rng.lognormvariate(-self._sigma * self._sigma / 2, self._sigma)

    def next_deadline(self, piece: Piece, available_at: float | None = None) -> float:
        """The time ``piece`` is due; never earlier than ``available_at`` (when it arrived)."""
        if self._previous_text is None:
            deadline = self.start + self.profile.ttft_ms / 1000.0
        else:
            gap = piece.tokens * self.profile.interval
            if gap:
                gap *= self._gap_factor()
            deadline = (
                self._previous_deadline
                + gap
                + _pause_between(self.profile, self._previous_text, piece.text)
            )
        if available_at is not None and available_at > deadline:
            deadline = available_at
        self._previous_text = piece.text
        self._previous_deadline = deadline
        return deadline


async def chunk_pieces(
    pieces: AsyncIterable[Piece], chunk_tokens: int
) -> AsyncGenerator[Piece, None]:
    """Merge consecutive pieces into events of at least ``chunk_tokens`` tokens."""
    if chunk_tokens <= 1:
        async for piece in pieces:
            yield piece
        return
    texts: list[str] = []
    tokens = 0
    async for piece in pieces:
        texts.append(piece.text)
        tokens += piece.tokens
        if tokens >= chunk_tokens:
            yield Piece("".join(texts), tokens)
            texts, tokens = [], 0
    if texts:
        yield Piece("".join(texts), tokens)


async def pace(
    pieces: AsyncIterable[Piece],
    profile: PacingProfile,
    clock: Clock,
    *,
    live: bool = False,
) -> AsyncGenerator[Piece, None]:
    """Yield each piece at its deadline.

    ``live`` marks a source whose pieces arrive over time (an upstream model): a piece is
    then never due before the moment it was received. A scripted source is not live: all its
    text exists at the start, so its schedule stays anchored at the start.
    """
    schedule = Schedule(profile, clock.now())
    async for piece in chunk_pieces(pieces, profile.chunk_tokens):
        deadline = schedule.next_deadline(piece, clock.now() if live else None)
        await clock.sleep_until(deadline)
        yield piece
