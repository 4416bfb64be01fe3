"""Scripted and echo replies: the sources that have the whole reply at the start.

A source turns a conversation into the reply's events (``engine.events.ReplySource``); an
upstream model (``tokenstream.sources.upstream``) yields them as they arrive instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from tokenstream.config import ReplyRule
from tokenstream.engine.events import ReplyEvent, TextDelta
from tokenstream.engine.messages import ChatMessage, last_user_text

__all__ = ["EchoSource", "ReplyRule", "ScriptedSource"]

log = logging.getLogger(__name__)

# A rule pattern comes from the config and is trusted, but the text it runs on is not:
# the `regex` engine's timeout bounds any backtracking a prompt can provoke.
MATCH_TIMEOUT_S = 0.05


async def _whole(text: str) -> AsyncIterator[ReplyEvent]:
    if text:
        yield TextDelta(text)


class ScriptedSource:
    """Replies from rules: the first rule whose pattern is found in the last user message."""

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

    def reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ReplyEvent]:
        return _whole(self.choose(last_user_text(messages)))


class EchoSource:
    """Replies with the last user message, unchanged."""

    def reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ReplyEvent]:
        return _whole(last_user_text(messages))
