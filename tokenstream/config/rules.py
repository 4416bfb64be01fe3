"""Scripted rules: what a rule matches and answers (``RuleConfig``), and the rule compiled
for the scripted source (``ReplyRule``).

Every condition a rule gives must hold; a rule with none answers every request. The
conditions, as a rule file writes them:

==================  ========================================================================
``match``           regex searched in the last user message
``system``          regex searched in the system prompt (every system or developer message)
``model``           regex the requested model fully matches
``dialect``         one or a list of ``openai-chat``, ``openai-responses``, ``anthropic``,
                    ``ai-sdk-ui``, ``stream`` (``GET /v1/stream``)
``tools``           true: tools are offered; false: none are
``tool``            the name of a tool that is offered
``tool_result``     regex searched in a tool's result, the conversation's last message
``tool_call_id``    regex the id of the call that result answers fully matches
``headers``         ``{name: regex}``: each header is sent and has a match
``call``            the request's position in its sequence: ``1``, ``[2, 3]``,
                    ``{from: 3}`` or ``{from: 3, to: 5}``
==================  ========================================================================

A rule with ``tool_result`` or ``tool_call_id`` answers only a conversation whose last
message is a tool's result, and every other rule only the rest: the question that asked
for a tool is not asked again when the tool's result comes back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import regex
from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from tokenstream.config.base import StrictModel
from tokenstream.engine.faults import Fault, parse_faults

__all__ = [
    "RULE_DIALECTS",
    "CallRange",
    "Calls",
    "ReplyRule",
    "RuleConfig",
    "RuleDialect",
    "RuleOrigin",
    "ToolCallConfig",
    "compile_rule",
]

RuleDialect = Literal["openai-chat", "openai-responses", "anthropic", "ai-sdk-ui", "stream"]
RULE_DIALECTS: tuple[RuleDialect, ...] = (
    "openai-chat", "openai-responses", "anthropic", "ai-sdk-ui", "stream"
)
"""What ``dialect`` matches: the API a request came in (``stream``: ``GET /v1/stream``)."""

RuleOrigin = Literal["config", "runtime"]
"""Where a rule comes from: the config file, or ``POST /_tokenstream/rules``."""

_HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}"


def _compiled(value: str) -> str:
    try:
        regex.compile(value)
    except regex.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


class ToolCallConfig(StrictModel):
    """A tool call a rule answers with, streamed in each dialect's own form."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the function's name, as the tools name it"
    )
    arguments: dict[str, Any] | str = Field(
        default_factory=dict, description="a mapping, or a JSON object as a string"
    )
    id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the call's id; unset = a new 'call_...' id for every reply",
    )

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object ({...}), as tool arguments are")
        return value

    @property
    def arguments_json(self) -> str:
        """The arguments as the model streams them: JSON text, as written when given so."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


class CallRange(StrictModel):
    """``call: {from: 3}`` (the third call and every later one) or ``{from: 3, to: 5}``."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True,
        serialize_by_alias=True,
    )

    first: int = Field(alias="from", ge=1)
    last: int | None = Field(default=None, alias="to", ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> CallRange:
        if self.last is not None and self.last < self.first:
            raise ValueError(f"'to' ({self.last}) comes before 'from' ({self.first})")
        return self


_CALL_FORMS = (
    "give a call number from 1 (call: 1), a list of them (call: [2, 3]) or a range "
    "(call: {from: 3} or {from: 3, to: 5})"
)


class RuleConfig(StrictModel):
    """A rule as a config file (``responses.rules``) or ``POST /_tokenstream/rules`` gives it."""

    # --- conditions (module docstring) ---
    match: str = Field(
        default="", description="regular expression searched in the last user message; "
        "unset = any"
    )
    system: str | None = Field(default=None, description="regex searched in the system prompt")
    model: str | None = Field(default=None, description="regex the model fully matches")
    dialect: list[RuleDialect] | None = Field(
        default=None, description="the API the request came in: one name or a list"
    )
    tools: bool | None = Field(default=None, description="true: tools offered; false: none")
    tool: str | None = Field(
        default=None, min_length=1, max_length=256, description="a tool offered by this name"
    )
    tool_result: str | None = Field(
        default=None,
        description="regular expression searched in a tool's result: the rule then answers "
        "only a conversation whose last message is a tool result, and others only the rest",
    )
    tool_call_id: str | None = Field(
        default=None, description="regex the tool result's call id fully matches"
    )
    headers: dict[str, str] | None = Field(
        default=None, description="{header name: regex searched in its value}"
    )
    call: int | list[int] | CallRange | None = Field(
        default=None, description="the request's position in its sequence (1-based)"
    )
    # --- what it answers with ---
    reply: str | None = None
    reply_file: str | None = Field(
        default=None, description="file with the reply, relative to the config file"
    )
    reasoning: str | None = Field(
        default=None, description="reasoning (thinking) streamed before the reply"
    )
    tool_calls: list[ToolCallConfig] = Field(
        default_factory=list, max_length=128, description="tool calls streamed after the reply"
    )
    fault: str | None = Field(
        default=None, description="a fault spec (engine/faults.py), e.g. 'error:429@0'"
    )
    profile: str | None = Field(
        default=None, description="the pacing profile of the reply, unless the request names one"
    )

    @field_validator("match", "system", "model", "tool_result", "tool_call_id")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else _compiled(value)

    @field_validator("dialect", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("dialect")
    @classmethod
    def _some_dialect(cls, value: list[RuleDialect] | None) -> list[RuleDialect] | None:
        if value is not None and not value:
            raise ValueError("give at least one dialect, or leave 'dialect' out")
        return value

    @field_validator("headers")
    @classmethod
    def _header_patterns(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, pattern in (value or {}).items():
            if not regex.fullmatch(_HEADER_NAME, name):
                raise ValueError(f"{name!r} is not a header name")
            try:
                _compiled(pattern)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @field_validator("call", mode="wrap")
    @classmethod
    def _call_forms(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, bool):
            raise ValueError(_CALL_FORMS)
        try:
            call = handler(value)
        except ValidationError as exc:
            detail = exc.errors(include_url=False)[-1]["msg"]
            raise ValueError(f"{_CALL_FORMS} ({detail})") from None
        numbers = [call] if isinstance(call, int) else call
        if isinstance(numbers, list) and (not numbers or min(numbers) < 1):
            raise ValueError(_CALL_FORMS)
        return call

    @field_validator("fault")
    @classmethod
    def _fault_spec(cls, value: str | None) -> str | None:
        if value is not None:
            parse_faults(value)  # a FaultSpecError is a ValueError: it says what is wrong
        return value

    @model_validator(mode="after")
    def _one_reply(self) -> RuleConfig:
        if self.reply is not None and self.reply_file is not None:
            raise ValueError("give one of 'reply' or 'reply_file', not both")
        if (
            self.reply is None and self.reply_file is None and not self.tool_calls
            and self.fault is None
        ):
            raise ValueError("give 'reply', 'reply_file', 'tool_calls' or 'fault'")
        return self


@dataclass(frozen=True, slots=True)
class Calls:
    """The positions in a sequence a rule answers: ``numbers``, or ``first`` to ``last``."""

    numbers: frozenset[int] = frozenset()
    first: int = 1
    last: int | None = None

    def __contains__(self, position: object) -> bool:
        if not isinstance(position, int):
            return False
        if self.numbers:
            return position in self.numbers
        return self.first <= position and (self.last is None or position <= self.last)

    def __str__(self) -> str:
        if self.numbers:
            numbers = sorted(self.numbers)
            if len(numbers) == 1:
                return f"call {numbers[0]}"
            return "calls " + ", ".join(str(number) for number in numbers)
        if self.last is None:
            return f"calls from {self.first}"
        return f"calls {self.first} to {self.last}"

    @classmethod
    def of(cls, call: int | list[int] | CallRange) -> Calls:
        if isinstance(call, int):
            return cls(numbers=frozenset({call}))
        if isinstance(call, list):
            return cls(numbers=frozenset(call))
        return cls(first=call.first, last=call.last)


@dataclass(frozen=True, slots=True)
class ReplyRule:
    """A ``RuleConfig`` compiled: what the scripted source matches, and where it comes from
    (for the journal and for errors)."""

    pattern: regex.Pattern[str]
    reply: str
    reasoning: str = ""
    tool_calls: tuple[ToolCallConfig, ...] = ()
    tool_result: regex.Pattern[str] | None = None
    """Set: the rule answers only a tool's result that this is found in."""
    tool_call_id: regex.Pattern[str] | None = None
    system: regex.Pattern[str] | None = None
    model: regex.Pattern[str] | None = None
    dialects: frozenset[str] | None = None
    tools: bool | None = None
    tool: str | None = None
    headers: tuple[tuple[str, regex.Pattern[str]], ...] = ()
    calls: Calls | None = None
    fault: tuple[Fault, ...] = ()
    """The faults the reply is given (empty: none)."""
    profile: str | None = None
    """The pacing profile of the reply, when the request names none (None: the default)."""
    origin: RuleOrigin = "config"
    index: int = 0
    """Config: the position in ``responses.rules`` (from 0); runtime: the number
    ``POST /_tokenstream/rules`` gave it (from 1)."""
    test_id: str | None = None
    """Runtime: the ``X-Tokenstream-Test-Id`` it was added with; it matches only requests
    with the same (None: every request)."""

    @property
    def answers_tool_results(self) -> bool:
        return self.tool_result is not None or self.tool_call_id is not None

    @property
    def name(self) -> str:
        """How errors and the journal name it: ``responses.rules.3``, ``runtime rule 7``."""
        if self.origin == "config":
            return f"responses.rules.{self.index}"
        return f"runtime rule {self.index}"

    @property
    def fault_spec(self) -> str | None:
        """The faults as a spec (``error:429@0``), or None."""
        return ",".join(str(fault) for fault in self.fault) or None


def _pattern(value: str | None) -> regex.Pattern[str] | None:
    return None if value is None else regex.compile(value)


def compile_rule(
    rule: RuleConfig,
    reply: str,
    *,
    origin: RuleOrigin = "config",
    index: int = 0,
    test_id: str | None = None,
) -> ReplyRule:
    """``rule`` ready to match; ``reply`` is its text (read from ``reply_file`` if it has one)."""
    return ReplyRule(
        regex.compile(rule.match),
        reply,
        reasoning=rule.reasoning or "",
        tool_calls=tuple(rule.tool_calls),
        tool_result=_pattern(rule.tool_result),
        tool_call_id=_pattern(rule.tool_call_id),
        system=_pattern(rule.system),
        model=_pattern(rule.model),
        dialects=None if rule.dialect is None else frozenset(rule.dialect),
        tools=rule.tools,
        tool=rule.tool,
        headers=tuple((name, regex.compile(value)) for name, value in (rule.headers or {}).items()),
        calls=None if rule.call is None else Calls.of(rule.call),
        fault=() if rule.fault is None else parse_faults(rule.fault),
        profile=rule.profile,
        origin=origin,
        index=index,
        test_id=test_id,
    )
