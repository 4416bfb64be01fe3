"""Source stage: where reply text comes from.

A source turns a conversation into an async iterator of text deltas. Scripted and echo
replies exist whole at the start; an upstream model (``tokenstream.sources.upstream``) yields
deltas as they arrive, and fits the same slot.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from tokenstream.config import ReplyRule
from tokenstream.engine.messages import ChatMessage, last_user_text

__all__ = ["EchoSource", "ReplyRule", "ScriptedSource", "Source"]

log = logging.getLogger(__name__)

# A rule pattern comes from the config and is trusted, but the text it runs on is not:
# the `regex` engine's timeout bounds any backtracking a prompt can provoke.
MATCH_TIMEOUT_S = 0.05


class Source(Protocol):
    live: bool
    """True when deltas arrive over time (the pacer then never sends a piece before it came)."""

    def reply(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]: ...


async def _whole(text: str) -> AsyncGenerator[str, None]:
    if text:
        yield text


class ScriptedSource:
    """Replies from rules: the first rule whose pattern is found in the last user message."""

    live = False

    def __init__(self, rules: Sequence[ReplyRule], default_reply: str) -> None:
        self.rules = tuple(rules)
        self.default_reply = default_reply

    def choose(self, prompt: str) -> str:
        for rule in self.rules:
            try:
                if rule.pattern.search(prompt, timeout=MATCH_TIMEOUT_S):
                    return rule.reply
            except TimeoutError:
                log.warning("rule %r timed out on a %d-char prompt; skipped",
                            rule.pattern.pattern, len(prompt))
        return self.default_reply

    def reply(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        return _whole(self.choose(last_user_text(messages)))


class EchoSource:
    """Replies with the last user message, unchanged."""

    live = False

    def reply(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        return _whole(last_user_text(messages))
