"""Matching a request against the scripted rules (``config.rules`` lists the conditions).

A route fills in a ``ScriptRequest``; the scripted source works out, once per request, the
``Facts`` every condition reads (the last user message, the system prompt, the tool result,
the position in the sequence), then asks each rule which of its conditions fail.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import regex

from tokenstream.config import ReplyRule
from tokenstream.engine.messages import ChatMessage, last_tool_result, last_user_text
from tokenstream.errors import NotFound

__all__ = [
    "MATCH_TIMEOUT_S",
    "SESSION_HEADER",
    "TEST_ID_HEADER",
    "Condition",
    "Facts",
    "ScriptRequest",
    "conditions_of",
    "failed_conditions",
    "no_matching_rule",
]

log = logging.getLogger(__name__)

SESSION_HEADER = "X-Tokenstream-Session"
"""Names the sequence a request belongs to (``call``); without it, its conversation does."""

TEST_ID_HEADER = "X-Tokenstream-Test-Id"
"""Scopes run-time rules, the sequences and the journal to one test."""

# A rule pattern comes from the config and is trusted, but the text it runs on is not:
# the `regex` engine's timeout bounds any backtracking a prompt can provoke.
MATCH_TIMEOUT_S = 0.05

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ScriptRequest:
    """A request as the scripted rules see it, whatever API it came in."""

    messages: Sequence[ChatMessage]
    model: str
    dialect: str
    """``openai-chat``, ``openai-responses``, ``anthropic``, ``ai-sdk-ui`` or ``stream``."""
    tools: tuple[str, ...] = ()
    """The names of the tools offered."""
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    """The request's headers: a case-insensitive mapping (aiohttp's ``request.headers``)."""

    @property
    def test_id(self) -> str | None:
        return self.headers.get(TEST_ID_HEADER) or None

    def sequence_key(self) -> tuple[str, str, str]:
        """The sequence ``call`` counts in: the test's, then the ``X-Tokenstream-Session``
        header's, or else the conversation's (its system prompt and first user message, so
        that the same conversation continued is the same sequence)."""
        test_id = self.test_id or ""
        session = self.headers.get(SESSION_HEADER)
        if session:
            return (test_id, "session", session)
        first_user = next((m.content for m in self.messages if m.role == "user"), "")
        digest = hashlib.sha256()
        for text in (system_prompt(self.messages), first_user):
            data = text.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "big") + data)
        return (test_id, "conversation", digest.hexdigest())


def system_prompt(messages: Sequence[ChatMessage]) -> str:
    """Every system (or developer) message, one per line."""
    return "\n".join(m.content for m in messages if m.role in ("system", "developer"))


@dataclass(frozen=True, slots=True)
class Facts:
    """What the conditions read, worked out once per request."""

    request: ScriptRequest
    call: int
    """The request's position in its sequence, from 1."""
    prompt: str
    system: str
    tool_result: ChatMessage | None

    @classmethod
    def of(cls, request: ScriptRequest, call: int) -> Facts:
        return cls(
            request,
            call,
            last_user_text(request.messages),
            system_prompt(request.messages),
            last_tool_result(request.messages),
        )


def _found(pattern: regex.Pattern[str], text: str) -> bool:
    try:
        return pattern.search(text, timeout=MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        log.warning("rule %r timed out on %d chars; skipped", pattern.pattern, len(text))
        return False


def _whole(pattern: regex.Pattern[str], text: str) -> bool:
    try:
        return pattern.fullmatch(text, timeout=MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        log.warning("rule %r timed out on %d chars; skipped", pattern.pattern, len(text))
        return False


def _tool_result_failure(rule: ReplyRule, facts: Facts) -> str | None:
    result = facts.tool_result
    if result is None:
        if rule.answers_tool_results:
            return "tool_result: the last message is not a tool's result"
        return None
    if not rule.answers_tool_results:
        return (
            "tool_result: the last message is a tool's result, which only a rule with "
            "tool_result or tool_call_id answers"
        )
    if rule.tool_result is not None and not _found(rule.tool_result, result.content):
        return f"tool_result: the tool's result has no match for {rule.tool_result.pattern!r}"
    if rule.tool_call_id is not None and not _whole(rule.tool_call_id, result.tool_call_id or ""):
        return (
            f"tool_call_id: the result answers call {result.tool_call_id!r}, which does not "
            f"fully match {rule.tool_call_id.pattern!r}"
        )
    return None


def _dialect_failure(rule: ReplyRule, facts: Facts) -> str | None:
    dialect = facts.request.dialect
    if rule.dialects is None or dialect in rule.dialects:
        return None
    return f"dialect: the request came in {dialect}, not {', '.join(sorted(rule.dialects))}"


def _model_failure(rule: ReplyRule, facts: Facts) -> str | None:
    model = facts.request.model
    if rule.model is None or _whole(rule.model, model):
        return None
    return f"model: {model!r} does not fully match {rule.model.pattern!r}"


def _tools_failure(rule: ReplyRule, facts: Facts) -> str | None:
    if rule.tools is None or rule.tools == bool(facts.request.tools):
        return None
    return "tools: " + ("no tools are offered" if rule.tools else "tools are offered")


def _tool_failure(rule: ReplyRule, facts: Facts) -> str | None:
    if rule.tool is None or rule.tool in facts.request.tools:
        return None
    return f"tool: no tool named {rule.tool!r} is offered"


def _header_failure(rule: ReplyRule, facts: Facts) -> str | None:
    for name, pattern in rule.headers:
        value = facts.request.headers.get(name)
        if value is None:
            return f"headers: {name} is not sent"
        if not _found(pattern, value):
            return f"headers: {name} has no match for {pattern.pattern!r}"
    return None


def _call_failure(rule: ReplyRule, facts: Facts) -> str | None:
    if rule.calls is None or facts.call in rule.calls:
        return None
    return f"call: this is call {facts.call} of its sequence; the rule answers {rule.calls}"


def _system_failure(rule: ReplyRule, facts: Facts) -> str | None:
    if rule.system is None or _found(rule.system, facts.system):
        return None
    return f"system: the system prompt has no match for {rule.system.pattern!r}"


def _match_failure(rule: ReplyRule, facts: Facts) -> str | None:
    if _found(rule.pattern, facts.prompt):
        return None
    return f"match: the last user message has no match for {rule.pattern.pattern!r}"


Condition = Callable[[ReplyRule, Facts], str | None]


def conditions_of(rule: ReplyRule) -> tuple[Condition, ...]:
    """The conditions ``rule`` sets, in the order they are checked (the cheap ones first; the
    prompt, the longest text, last). Worked out once per rule (``ScriptedSource`` keeps them
    beside its rules), so that a request runs only the checks its rules have."""
    sets = (
        (_tool_result_failure, True),  # a tool's result fails a rule without tool_result
        (_dialect_failure, rule.dialects is not None),
        (_model_failure, rule.model is not None),
        (_tools_failure, rule.tools is not None),
        (_tool_failure, rule.tool is not None),
        (_header_failure, bool(rule.headers)),
        (_call_failure, rule.calls is not None),
        (_system_failure, rule.system is not None),
        (_match_failure, True),
    )
    return tuple(condition for condition, present in sets if present)


def failed_conditions(
    rule: ReplyRule,
    facts: Facts,
    *,
    all_of_them: bool = False,
    conditions: Sequence[Condition] | None = None,
) -> list[str]:
    """The conditions of ``rule`` that ``facts`` fail, each with why; empty when it matches.
    Only the first unless ``all_of_them`` (to find the closest rule). ``conditions``: the
    rule's ``conditions_of``, when already worked out."""
    failures: list[str] = []
    for condition in conditions_of(rule) if conditions is None else conditions:
        reason = condition(rule, facts)
        if reason is not None:
            failures.append(reason)
            if not all_of_them:
                break
    return failures


def no_matching_rule(rules: Sequence[ReplyRule], facts: Facts) -> NotFound:
    """The 404 of strict mode: no rule matched; the closest one (the fewest conditions
    failed, the first of equals) and why it did not."""
    prefix = "No rule matches this request (responses.strict is on)"
    closest: tuple[ReplyRule, list[str]] | None = None
    for rule in rules:
        failures = failed_conditions(rule, facts, all_of_them=True)
        if closest is None or len(failures) < len(closest[1]):
            closest = (rule, failures)
    if closest is None:
        message = f"{prefix}, and there are no rules."
    else:
        rule, failures = closest
        conditions = "1 condition" if len(failures) == 1 else f"{len(failures)} conditions"
        message = (
            f"{prefix}. The closest rule is {rule.name}, which failed {conditions}: "
            + "; ".join(failures) + "."
        )
    return NotFound(message, code="no_matching_rule")
