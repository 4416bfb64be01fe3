"""The pipeline, assembled: source -> tokenizer -> token limit -> pacer.

Each stage is an async iterator over the previous one, so closing the last one (a client
left) closes them all, down to the source's network request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from tokenstream.chat import ChatMessage
from tokenstream.clock import Clock
from tokenstream.pacer import PacingProfile, pace
from tokenstream.sources import Source
from tokenstream.tokenizer import Piece, Tokenizer, tokenize_stream
from tokenstream.wire import FinishReason, Usage

__all__ = ["ReplyProgress", "count_prompt_tokens", "limit_tokens", "reply_pieces"]

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

    @property
    def finish_reason(self) -> FinishReason:
        return "length" if self.truncated else "stop"

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens)


async def limit_tokens(
    pieces: AsyncIterable[Piece], max_tokens: int | None, progress: ReplyProgress
) -> AsyncGenerator[Piece, None]:
    """Pass pieces while they fit in ``max_tokens``; mark the reply truncated when one does not."""
    async for piece in pieces:
        if max_tokens is not None and progress.completion_tokens + piece.tokens > max_tokens:
            progress.truncated = True
            return
        progress.completion_tokens += piece.tokens
        yield piece


async def reply_pieces(
    *,
    source: Source,
    messages: Sequence[ChatMessage],
    tokenizer: Tokenizer,
    profile: PacingProfile,
    clock: Clock,
    max_tokens: int | None,
    progress: ReplyProgress,
) -> AsyncGenerator[Piece, None]:
    """Every reply piece, at its scheduled time."""
    async with (
        aclosing(source.reply(messages)) as deltas,
        aclosing(tokenize_stream(tokenizer, deltas, live=source.live)) as pieces,
        aclosing(limit_tokens(pieces, max_tokens, progress)) as limited,
        aclosing(pace(limited, profile, clock, live=source.live)) as paced,
    ):
        async for piece in paced:
            yield piece
