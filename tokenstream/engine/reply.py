"""The pipeline of a reply that is all there: source -> tokenizer -> token limit -> pacer.

A scripted or echo reply exists whole at the start, so its pieces and their deadlines are
computed up front, lazily, by plain iterators (``scheduled_reply``); ``tokenstream.engine.playout``
writes them at their deadlines. An upstream model's reply arrives over time and takes the
live path instead (``tokenstream.engine.live``).

A reply of text alone (the common case) is scheduled as its pieces. A reply with reasoning
or tool calls is scheduled as one sequence on one ``Schedule``: reasoning and tool-call
arguments are tokenized and paced exactly like text (each token an event, counted in the
reply's tokens and its limit), and a tool call's start and end go out with the token next to
them (``PacedEvent``). Pacing is the source's and the profile's alone: every dialect gets the
same deadlines.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from tokenstream.engine.clock import TimerClock
from tokenstream.engine.events import (
    Finish,
    PacedEvent,
    ReasoningDelta,
    ReplyEncoder,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.lateness import LatenessHistogram, StreamCounters
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.pacer import PacingProfile, Schedule, chunked, timed
from tokenstream.engine.playout import EventSink, Playout
from tokenstream.engine.tokenizer import Piece, Tokenizer

__all__ = [
    "ReplyProgress",
    "ScheduledItem",
    "ScheduledReply",
    "WholeReply",
    "count_prompt_tokens",
    "scheduled_reply",
    "whole_reply",
    "within_token_limit",
]

WholeReply = str | tuple[ReplyEvent, ...]
"""A reply that is all there: its text, or its events when it is more than text."""

ScheduledItem = Piece | PacedEvent
"""What a scheduled reply's events are: pieces of text, or paced other events."""

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
    tool_calls: bool = False
    """A tool call was sent: the reply ends with ``tool_calls``."""

    def admit(self, piece: Piece, max_tokens: int | None) -> bool:
        """Count ``piece`` if it fits in ``max_tokens``; else mark the reply truncated."""
        if max_tokens is not None and self.completion_tokens + piece.tokens > max_tokens:
            self.truncated = True
            return False
        self.completion_tokens += piece.tokens
        return True

    @property
    def finish_reason(self) -> str:
        if self.truncated:
            return "length"
        return "tool_calls" if self.tool_calls else "stop"

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


async def whole_reply(events: AsyncIterable[ReplyEvent]) -> WholeReply:
    """The reply of a source that has it all at the start (scripted, echo): its text when it
    is text alone, else its events."""
    collected = [event async for event in events]
    if all(isinstance(event, TextDelta) for event in collected):
        return "".join(event.text for event in collected if isinstance(event, TextDelta))
    return tuple(collected)


def scheduled_reply(
    reply: WholeReply,
    *,
    tokenizer: Tokenizer,
    profile: PacingProfile,
    start: float,
    max_tokens: int | None,
    progress: ReplyProgress,
) -> Iterator[tuple[float, ScheduledItem]]:
    """Every event of a reply that is all there, with its deadline, computed as it is taken."""
    if not isinstance(reply, str):
        return _scheduled_events(reply, tokenizer, Schedule(profile, start), max_tokens, progress)
    pieces = tokenizer.shared_pieces(reply)  # shared by every stream of the same reply
    if profile.chunk_tokens <= 1:
        if max_tokens is not None and sum(piece.tokens for piece in pieces) <= max_tokens:
            max_tokens = None  # it all fits: no piece needs the check
        return _one_event_per_piece(pieces, Schedule(profile, start), max_tokens, progress)
    return timed(within_token_limit(pieces, max_tokens, progress), profile, start)


def _paced_as(event: ReplyEvent, text: str) -> ReplyEvent | None:
    """``event``'s kind of event for one piece of its text; None for reply text (a Piece)."""
    if isinstance(event, ReasoningDelta):
        return ReasoningDelta(text)
    if isinstance(event, ToolCallDelta):
        return ToolCallDelta(event.index, text)
    return None


def _scheduled_events(
    events: Sequence[ReplyEvent],
    tokenizer: Tokenizer,
    schedule: Schedule,
    max_tokens: int | None,
    progress: ReplyProgress,
) -> Iterator[tuple[float, ScheduledItem]]:
    """A reply with more than text, as one paced sequence (see the module's docstring)."""
    chunk_tokens = schedule.profile.chunk_tokens
    waiting: list[ReplyEvent] = []  # starts of tool calls: sent with the next token
    deadline = schedule.start
    for event in events:
        if isinstance(event, TextDelta | ReasoningDelta | ToolCallDelta):
            text = event.text if not isinstance(event, ToolCallDelta) else event.arguments
            pieces = within_token_limit(tokenizer.shared_pieces(text), max_tokens, progress)
            for piece in chunked(pieces, chunk_tokens):
                deadline = schedule.next_deadline(piece)
                for start in waiting:
                    yield deadline, PacedEvent(start, 0)
                waiting.clear()
                paced = _paced_as(event, piece.text)
                yield deadline, piece if paced is None else PacedEvent(paced, piece.tokens)
            if progress.truncated:
                return
        elif isinstance(event, ToolCallStart):
            progress.tool_calls = True
            waiting.append(event)
        else:  # a tool call's end, and anything else: right after what came before it
            for start in waiting:
                yield deadline, PacedEvent(start, 0)
            waiting.clear()
            yield deadline, PacedEvent(event, 0)


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
    """A reply that is all there, played out by a ``Playout`` (``starting.Reply``)."""

    __slots__ = ("_playout", "clock", "lateness", "max_tokens", "profile", "progress", "reply",
                 "stats", "tokenizer")

    def __init__(
        self,
        reply: WholeReply,
        *,
        tokenizer: Tokenizer,
        profile: PacingProfile,
        max_tokens: int | None,
        progress: ReplyProgress,
        clock: TimerClock,
        stats: StreamCounters,
        lateness: LatenessHistogram | None,
    ) -> None:
        self.reply = reply
        self.tokenizer = tokenizer
        self.profile = profile
        self.max_tokens = max_tokens
        self.progress = progress
        self.clock = clock
        self.stats = stats
        self.lateness = lateness if profile.tokens_per_second is not None else None
        self._playout: Playout | None = None

    def schedule(self) -> Iterator[tuple[float, ScheduledItem]]:
        """Every event with its deadline, from now, computed as it is taken."""
        return scheduled_reply(
            self.reply,
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
        pass  # nothing is held open: the reply was all there
