"""Pacer stage: token pieces -> the same pieces at scheduled times.

The schedule is pure arithmetic (``Schedule``). ``timed`` lays it over a reply that exists
whole at the start (scripted, echo), without waiting: ``tokenstream.engine.playout`` writes its
events at their deadlines. A reply that arrives over time takes ``Schedule`` one piece at a
time instead, in ``tokenstream.engine.live``, which sleeps to each deadline on an injected clock.

Deadlines are absolute: event *i* is due at ``start + ttft + sum(gaps before i)`` on a
monotonic clock, so a late wake-up never shifts the events after it. A piece that carries
*k* tokens waits *k* intervals.

Jitter: each gap is multiplied by a log-normal factor ``exp(N(-s^2/2, s))`` with
``s = jitter``. Its mean is exactly 1, so jitter changes the rhythm but not the average
rate, and a gap can never become negative. The same ``seed`` gives the same schedule.

Pauses: ``pause_ms`` is added after sentence punctuation (``.!?`` followed by whitespace,
or the full-width ``。！？``), and ``newline_pause_ms`` (default: ``pause_ms``) after a
piece that contains a line break.

Catch-up (live sources only, when ``max_buffer_ms`` is set): a live source's pieces are
buffered from the moment they arrive. Before each piece the pacer looks at the whole
buffer; if sending it at the profile's rate would keep any token waiting longer than
``max_buffer_ms`` after its arrival, the gap shrinks to the even rate that gets every
buffered token out by its arrival + ``max_buffer_ms`` (``catch_up_gap``). A burst is so
spread evenly over at most ``max_buffer_ms``; an upstream that is steadily faster than the
profile is followed at its own average rate, at most ``max_buffer_ms`` behind; an
upstream slower than the profile is passed on as it arrives. No piece is ever sent
before it arrived.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokenstream.engine.faults import FaultSpecError, parse_chaos, parse_faults
from tokenstream.engine.tokenizer import Piece

__all__ = ["PacingProfile", "Schedule", "catch_up_gap", "chunked", "timed"]

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
    max_buffer_ms: float | None = Field(
        default=None,
        ge=0,
        le=600_000,
        description="live sources: longest a token waits after it arrived; null = no limit",
    )

    fault: str | None = Field(
        default=None, max_length=1000,
        description="faults injected into every stream of the profile (engine/faults.py)",
    )
    chaos: str | None = Field(
        default=None, max_length=1000,
        description="seeded random faults, e.g. seed=7,error=0.1,truncate=0.05",
    )

    @field_validator("fault")
    @classmethod
    def _fault_spec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_faults(value)
            except FaultSpecError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("chaos")
    @classmethod
    def _chaos_spec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_chaos(value)
            except FaultSpecError as exc:
                raise ValueError(str(exc)) from None
        return value

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


def catch_up_gap(
    tokens: int, base: float, backlog: Iterable[tuple[float, int]], max_buffer: float
) -> float:
    """The longest gap after ``base`` for the next piece (``tokens`` tokens) that still lets
    every buffered token leave by its arrival + ``max_buffer``, the buffer going at an even rate.

    ``backlog`` holds ``(arrived_at, tokens buffered up to and including that arrival)``,
    oldest first, the next piece included. Token *j* of the buffer must leave by
    ``arrived_j + max_buffer``, so the rate must be at least
    ``cumulative_j / (arrived_j + max_buffer - base)`` for every *j*; the gap is the next
    piece's share at the largest such rate. ``math.inf`` when the buffer is empty.
    """
    rate = 0.0
    for arrived, cumulative in backlog:
        room = arrived + max_buffer - base
        if room <= 0:
            return 0.0
        rate = max(rate, cumulative / room)
    return tokens / rate if rate > 0 else math.inf


class Schedule:
    """Computes absolute deadlines, one piece at a time; no I/O, no sleeping."""

    __slots__ = ("_interval", "_pauses", "_previous_deadline", "_previous_text", "_rng",
                 "_sigma", "profile", "start")

    def __init__(self, profile: PacingProfile, start: float, rng: random.Random | None = None):
        self.profile = profile
        self.start = start
        self._rng = rng  # made at the first jittered gap: a Random is 2.5 KiB per stream
        self._sigma = profile.jitter
        self._interval = profile.interval
        self._pauses = profile.pause_ms > 0 or bool(profile.newline_pause_ms)
        self._previous_text: str | None = None
        self._previous_deadline = start

    def _gap_factor(self) -> float:
        if self._sigma == 0:
            return 1.0
        if self._rng is None:
            self._rng = random.Random(self.profile.seed)
        return self._rng.lognormvariate(-self._sigma * self._sigma / 2, self._sigma)

    def next_deadline(
        self,
        piece: Piece,
        available_at: float | None = None,
        backlog: Iterable[tuple[float, int]] | None = None,
    ) -> float:
        """The time ``piece`` is due; never earlier than ``available_at`` (when it arrived).

        ``backlog`` (live sources) is the buffer as ``catch_up_gap`` reads it; with the
        profile's ``max_buffer_ms`` it can only bring the deadline forward.
        """
        if self._previous_text is None:
            gap = self.profile.ttft_ms / 1000.0
        else:
            gap = piece.tokens * self._interval
            if gap and self._sigma:
                gap *= self._gap_factor()
            if self._pauses:
                gap += _pause_between(self.profile, self._previous_text, piece.text)
        if backlog is not None and self.profile.max_buffer_ms is not None:
            limit = catch_up_gap(
                piece.tokens, self._previous_deadline, backlog, self.profile.max_buffer_ms / 1000.0
            )
            gap = min(gap, limit)
        deadline = self._previous_deadline + gap
        if available_at is not None and available_at > deadline:
            deadline = available_at
        self._previous_text = piece.text
        self._previous_deadline = deadline
        return deadline


class _Chunker:
    """Joins consecutive pieces into events of at least ``chunk_tokens`` tokens."""

    __slots__ = ("_texts", "_tokens", "chunk_tokens")

    def __init__(self, chunk_tokens: int) -> None:
        self.chunk_tokens = chunk_tokens
        self._texts: list[str] = []
        self._tokens = 0

    def add(self, piece: Piece) -> Piece | None:
        """The event this piece completes, if it completes one."""
        self._texts.append(piece.text)
        self._tokens += piece.tokens
        return self.rest() if self._tokens >= self.chunk_tokens else None

    def rest(self) -> Piece | None:
        """The last, short event (at the end of the reply)."""
        if not self._texts:
            return None
        event = Piece("".join(self._texts), self._tokens)
        self._texts, self._tokens = [], 0
        return event


def chunked(pieces: Iterable[Piece], chunk_tokens: int) -> Iterator[Piece]:
    """Merge consecutive pieces into events of at least ``chunk_tokens`` tokens."""
    if chunk_tokens <= 1:
        return iter(pieces)  # no generator: an open stream keeps one frame less
    return _chunks(pieces, _Chunker(chunk_tokens))


def _chunks(pieces: Iterable[Piece], chunker: _Chunker) -> Iterator[Piece]:
    for piece in pieces:
        if (event := chunker.add(piece)) is not None:
            yield event
    if (event := chunker.rest()) is not None:
        yield event


def timed(
    pieces: Iterable[Piece], profile: PacingProfile, start: float
) -> Iterator[tuple[float, Piece]]:
    """The schedule of a reply that exists whole at ``start``: each event with its deadline.

    Nothing waits here: the deadlines are absolute, for ``tokenstream.engine.playout`` to keep.
    """
    schedule = Schedule(profile, start)
    for piece in chunked(pieces, profile.chunk_tokens):
        yield schedule.next_deadline(piece), piece
