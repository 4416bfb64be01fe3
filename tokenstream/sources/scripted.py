"""Scripted and echo replies: the sources that have the whole reply at the start.

A source turns a conversation into the reply's events (``engine.events.ReplySource``); an
upstream model (``tokenstream.sources.upstream``) yields them as they arrive instead.

A scripted reply is, in this order: the rule's reasoning, its text, its tool calls. A rule
with ``tool_result`` answers only a conversation whose last message is a tool's result (the
agent loop's second turn); every other rule only the rest, so that the question that asked
for a tool is not asked again when its result comes back.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import AsyncIterator, Sequence

import regex

from tokenstream.config import ReplyRule
from tokenstream.engine.events import (
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tokenstream.engine.messages import ChatMessage, last_tool_result, last_user_text

__all__ = ["EchoSource", "ReplyRule", "ScriptedSource", "rule_events"]

log = logging.getLogger(__name__)

# A rule pattern comes from the config and is trusted, but the text it runs on is not:
# the `regex` engine's timeout bounds any backtracking a prompt can provoke.
MATCH_TIMEOUT_S = 0.05

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """A tool call id as OpenAI's look: ``call_`` and 24 letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def rule_events(rule: ReplyRule) -> list[ReplyEvent]:
    """The reply a rule scripts, as events: reasoning, text, then each tool call whole."""
    events: list[ReplyEvent] = []
    if rule.reasoning:
        events.append(ReasoningDelta(rule.reasoning))
    if rule.reply:
        events.append(TextDelta(rule.reply))
    for index, call in enumerate(rule.tool_calls):
        events.append(ToolCallStart(index, call.id or new_call_id(), call.name))
        events.append(ToolCallDelta(index, call.arguments_json))
        events.append(ToolCallEnd(index))
    return events


async def _replay(events: Sequence[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
    for event in events:
        yield event


def _found(pattern: regex.Pattern[str], text: str) -> bool:
    try:
        return pattern.search(text, timeout=MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        log.warning("rule %r timed out on %d chars; skipped", pattern.pattern, len(text))
        return False


class ScriptedSource:
    """Replies from rules: the first rule that matches the conversation."""

    def __init__(self, rules: Sequence[ReplyRule], default_reply: str) -> None:
        self.rules = tuple(rules)
        self.default_reply = default_reply

    def choose(self, messages: Sequence[ChatMessage]) -> ReplyRule | None:
        """The first rule that answers ``messages``; None for the default reply."""
        prompt = last_user_text(messages)
        tool_result = last_tool_result(messages)
        for rule in self.rules:
            if tool_result is None:
                if rule.tool_result is not None:
                    continue
            elif rule.tool_result is None or not _found(rule.tool_result, tool_result.content):
                continue
            if _found(rule.pattern, prompt):
                return rule
        return None

    def reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ReplyEvent]:
        rule = self.choose(messages)
        if rule is None:
            return _replay([TextDelta(self.default_reply)] if self.default_reply else [])
        return _replay(rule_events(rule))


class EchoSource:
    """Replies with the last user message, unchanged."""

    def reply(self, messages: Sequence[ChatMessage]) -> AsyncIterator[ReplyEvent]:
        text = last_user_text(messages)
        return _replay([TextDelta(text)] if text else [])
