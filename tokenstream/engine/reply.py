"""The pipeline of a reply that is all there: source -> tokenizer -> token limit -> pacer.

A scripted or echo reply exists whole at the start, so its pieces and their deadlines are
computed up front, lazily, by plain iterators (``scheduled_reply``); ``tokenstream.engine.playout``
writes them at their deadlines. An upstream model's reply arrives over time and takes the
live path instead (``tokenstream.engine.live``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tokenstream.dialects.wire import FinishReason, Usage
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.pacer import PacingProfile, Schedule, timed
from tokenstream.engine.tokenizer import Piece, Tokenizer
from tokenstream.sources.scripted import Source

__all__ = [
    "ReplyProgress",
    "count_prompt_tokens",
    "scheduled_reply",
    "whole_reply",
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
    def finish_reason(self) -> FinishReason:
        return "length" if self.truncated else "stop"

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)


def within_token_limit(
    pieces: Iterable[Piece], max_tokens: int | None, progress: ReplyProgress
) -> Iterator[Piece]:
    """Pass pieces while they fit in ``max_tokens``; mark the reply truncated when one does not."""
    for piece in pieces:
        if not progress.admit(piece, max_tokens):
            return
        yield piece


async def whole_reply(source: Source, messages: Sequence[ChatMessage]) -> str:
    """The text of a reply from a source that is not live (it has it all at the start)."""
    return "".join([delta async for delta in source.reply(messages)])


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
