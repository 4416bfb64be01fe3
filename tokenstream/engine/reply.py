"""The pipeline of a reply that is all there: source -> tokenizer -> token limit -> pacer.

A scripted or echo reply exists whole at the start, so its pieces and their deadlines are
computed up front, lazily, by plain iterators (``scheduled_reply``); ``tokenstream.engine.playout``
writes them at their deadlines. An upstream model's reply arrives over time and takes the
live path instead (``tokenstream.engine.live``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from tokenstream.engine.clock import TimerClock
from tokenstream.engine.events import Finish, ReplyEncoder, ReplyEvent, TextDelta, Usage
from tokenstream.engine.lateness import LatenessHistogram, StreamCounters
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.pacer import PacingProfile, Schedule, timed
from tokenstream.engine.playout import EventSink, Playout
from tokenstream.engine.tokenizer import Piece, Tokenizer

__all__ = [
    "ReplyProgress",
    "ScheduledReply",
    "count_prompt_tokens",
    "scheduled_reply",
    "whole_text",
    "within_token_limit",
]

# OpenAI's published accounting for chat prompts: every message costs 3 tokens of framing
# (plus 1 with a name), and 3 more prime the assistant's reply.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING_TOKENS = 3


def count_prompt_tokens(tokenizer: Tokenizer, messages: Sequence[ChatMessage]) -> int:
    total = _REPLY_PRIMING_TOKENS
    for message in messages:
        total += _TOKENS_PER_MESSAGE + tokenizer.count(message.role)
        total += tokenizer.count(message.content)
        if message.name:
            total += _TOKENS_PER_NAME + tokenizer.count(message.name)
    return total


@dataclass(slots=True)
class ReplyProgress:
    """What the reply has produced so far: for usage and the finish reason."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: bool = False

    def admit(self, piece: Piece, max_tokens: int | None) -> bool:
        """Count ``piece`` if it fits in ``max_tokens``; else mark the reply truncated."""
        if max_tokens is not None and self.completion_tokens + piece.tokens > max_tokens:
            self.truncated = True
            return False
        self.completion_tokens += piece.tokens
        return True

    @property
    def finish_reason(self) -> str:
        return "length" if self.truncated else "stop"

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)

    def closing_events(self) -> list[ReplyEvent]:
        """What the reply ends with, once its text is all out: the finish and the usage."""
        return [Finish(self.finish_reason), self.usage]


def within_token_limit(
    pieces: Iterable[Piece], max_tokens: int | None, progress: ReplyProgress
) -> Iterator[Piece]:
    """Pass pieces while they fit in ``max_tokens``; mark the reply truncated when one does not."""
    for piece in pieces:
        if not progress.admit(piece, max_tokens):
            return
        yield piece


async def whole_text(events: AsyncIterable[ReplyEvent]) -> str:
    """The text of a reply that a source has all at the start (scripted, echo)."""
    return "".join([event.text async for event in events if isinstance(event, TextDelta)])


def scheduled_reply(
    text: str,
    *,
    tokenizer: Tokenizer,
    profile: PacingProfile,
    start: float,
    max_tokens: int | None,
    progress: ReplyProgress,
) -> Iterator[tuple[float, Piece]]:
    """Every event of a reply that is all there, with its deadline, computed as it is taken."""
    pieces = tokenizer.shared_pieces(text)  # shared by every stream of the same reply
    if profile.chunk_tokens <= 1:
        if max_tokens is not None and sum(piece.tokens for piece in pieces) <= max_tokens:
            max_tokens = None  # it all fits: no piece needs the check
        return _one_event_per_piece(pieces, Schedule(profile, start), max_tokens, progress)
    return timed(within_token_limit(pieces, max_tokens, progress), profile, start)


def _one_event_per_piece(
    pieces: Iterable[Piece], schedule: Schedule, max_tokens: int | None, progress: ReplyProgress
) -> Iterator[tuple[float, Piece]]:
    """``timed(within_token_limit(...))`` when every piece is an event: one generator step
    per event instead of two (this runs once per event of every stream)."""
    if max_tokens is None:  # ``progress.admit`` without the check, inline
        for piece in pieces:
            progress.completion_tokens += piece.tokens
            yield schedule.next_deadline(piece), piece
        return
    for piece in pieces:
        if not progress.admit(piece, max_tokens):
            return
        yield schedule.next_deadline(piece), piece


class ScheduledReply:
    """A reply that is all there, played out by a ``Playout`` (``runner.Reply``)."""

    __slots__ = ("_playout", "clock", "lateness", "max_tokens", "profile", "progress", "stats",
                 "text", "tokenizer")

    def __init__(
        self,
        text: str,
        *,
        tokenizer: Tokenizer,
        profile: PacingProfile,
        max_tokens: int | None,
        progress: ReplyProgress,
        clock: TimerClock,
        stats: StreamCounters,
        lateness: LatenessHistogram | None,
    ) -> None:
        self.text = text
        self.tokenizer = tokenizer
        self.profile = profile
        self.max_tokens = max_tokens
        self.progress = progress
        self.clock = clock
        self.stats = stats
        self.lateness = lateness if profile.tokens_per_second is not None else None
        self._playout: Playout | None = None

    def schedule(self) -> Iterator[tuple[float, Piece]]:
        """Every event with its deadline, from now, computed as it is taken."""
        return scheduled_reply(
            self.text,
            tokenizer=self.tokenizer,
            profile=self.profile,
            start=self.clock.now(),
            max_tokens=self.max_tokens,
            progress=self.progress,
        )

    @property
    def tokens(self) -> int:
        return 0 if self._playout is None else self._playout.tokens

    @property
    def watch_clock(self) -> TimerClock:
        return self.clock

    def play(self, sse: EventSink, encoder: ReplyEncoder) -> Awaitable[None]:
        # the playout's own coroutine, handed on: no frame of this one stays alive (memory
        # per open stream)
        self._playout = Playout(
            sse, self.clock, self.schedule(), encoder, self.stats, lateness=self.lateness
        )
        return self._playout.run()

    def closing_events(self) -> list[ReplyEvent]:
        return self.progress.closing_events()

    async def aclose(self) -> None:
        pass  # nothing is held open: the text was all there
