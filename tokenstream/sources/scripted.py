"""Scripted and echo replies: the sources that have the whole reply at the start.

A route describes its request as a ``ScriptRequest``; a source answers it with a
``ScriptedReply``: the rule that matched, if any, and the reply's events. An upstream model
(``tokenstream.sources.upstream``) yields its events as they arrive instead.

A scripted reply is, in this order: the rule's reasoning, its text, its tool calls. The
rules are the ones added at run time (``runtime_rules``), then the config's; the first
whose conditions all hold answers (``matching``). When none does, the default reply does,
or, with ``responses.strict``, a 404 that names the closest rule.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

from tokenstream.config import ReplyRule
from tokenstream.engine.events import (
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tokenstream.engine.messages import last_user_text
from tokenstream.sources.matching import (
    Condition,
    Facts,
    ScriptRequest,
    conditions_of,
    failed_conditions,
    no_matching_rule,
)
from tokenstream.sources.runtime_rules import RuntimeRules
from tokenstream.sources.sequences import Sequences

__all__ = [
    "EchoSource",
    "ReplyRule",
    "ScriptSource",
    "ScriptedReply",
    "ScriptedSource",
    "rule_events",
]

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


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """A source's answer to one request."""

    rule: ReplyRule | None
    """The rule that matched (its ``fault`` and ``profile`` apply); None: no rule did."""
    events: tuple[ReplyEvent, ...]
    call: int | None = None
    """The request's position in its sequence (scripted source only)."""

    async def stream(self) -> AsyncIterator[ReplyEvent]:
        for event in self.events:
            yield event


class ScriptSource(Protocol):
    """A source whose reply is all there at the start: the app's ``sources``."""

    def answer(self, request: ScriptRequest) -> ScriptedReply: ...


class ScriptedSource:
    """Replies from rules: the first rule whose conditions all hold."""

    def __init__(
        self,
        rules: Sequence[ReplyRule],
        default_reply: str,
        *,
        strict: bool = False,
        max_runtime_rules: int = 1000,
        max_sequences: int = 10_000,
    ) -> None:
        self.rules = tuple(rules)
        self._config_rules = tuple((rule, conditions_of(rule)) for rule in self.rules)
        self.default_reply = default_reply
        self.strict = strict
        self.runtime = RuntimeRules(max_runtime_rules)
        self.sequences = Sequences(max_sequences)

    def _candidates(self, request: ScriptRequest) -> chain[tuple[ReplyRule, tuple[Condition, ...]]]:
        """The rules ``request`` may match, in order, each with its conditions."""
        runtime = ((rule, conditions_of(rule)) for rule in self.runtime.for_test(request.test_id))
        return chain(runtime, self._config_rules)

    def choose(self, request: ScriptRequest) -> tuple[ReplyRule | None, int]:
        """The first rule that answers ``request`` (None: none does) and the request's
        position in its sequence; counts the request in its sequence. In strict mode, a
        request no rule answers raises ``NotFound`` (``no_matching_rule``)."""
        facts = Facts.of(request, self.sequences.next_call(request.sequence_key()))
        for rule, conditions in self._candidates(request):
            if not failed_conditions(rule, facts, conditions=conditions):
                return rule, facts.call
        if self.strict:
            raise no_matching_rule([rule for rule, _ in self._candidates(request)], facts)
        return None, facts.call

    def answer(self, request: ScriptRequest) -> ScriptedReply:
        rule, call = self.choose(request)
        events = rule_events(rule) if rule is not None else []
        if not events and self.default_reply and (rule is None or rule.fault):
            # no rule, or one that only sets a fault (truncate@30): the default reply
            events = [TextDelta(self.default_reply)]
        return ScriptedReply(rule, tuple(events), call)


class EchoSource:
    """Replies with the last user message, unchanged."""

    def answer(self, request: ScriptRequest) -> ScriptedReply:
        text = last_user_text(request.messages)
        return ScriptedReply(None, (TextDelta(text),) if text else ())
