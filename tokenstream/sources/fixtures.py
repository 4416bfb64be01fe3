"""The fixture format: one recorded upstream reply, as a readable JSON file.

::

    {
      "tokenstream_fixture": 1,
      "recorded_at": "2025-06-01T12:00:00Z",
      "upstream": {"dialect": "openai-chat", "base_url": "https://api.openai.com/v1"},
      "request": {"model": ..., "max_tokens": ..., "messages": [...], "tools": [...]},
      "events": [
        {"at_ms": 412.031, "type": "model", "name": "gpt-4o-2024-08-06"},
        {"at_ms": 412.188, "type": "text", "text": "Hello"},
        ...
      ]
    }

``request`` is the conversation in neutral terms (``engine.messages.Conversation``): what a
request means whatever its dialect, so the same question asked in chat completions,
Responses or Anthropic Messages has the same ``request`` and the same key (``fixture_key``),
the name of its file. What only shapes the answer (the dialect, ``stream``, pacing) is not
part of it, and nothing secret is: no header, no key. ``events`` are the reply's events in
the order they arrived, each with its arrival in milliseconds after the request was sent
(``type``: ``text``, ``reasoning``, ``tool_call_start``, ``tool_call_delta``,
``tool_call_end``, ``finish``, ``usage``, ``model``, ``passthrough``).

A fixture is matched by the ``request`` in it, not by its file's name: an edited fixture
answers the request it now holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.messages import ChatMessage, Conversation, ToolSpec
from tokenstream.engine.replay import TimedEvent
from tokenstream.errors import TokenstreamError

__all__ = [
    "FORMAT_VERSION",
    "Fixture",
    "FixtureError",
    "fixture_key",
    "fixture_text",
    "normalised_request",
    "read_fixture",
]

FORMAT_VERSION = 1


class FixtureError(TokenstreamError):
    """A fixture file (or directory) that cannot be used: the message names it and the
    reason. Raised at start-up, when the fixtures are read."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"fixture {path}: {reason}")
        self.path = path
        self.reason = reason


# -- the request in neutral terms ---------------------------------------------------------


def _canonical_json(text: str) -> str:
    """JSON text in one spelling (tool-call arguments: ``{"a": 1}`` and ``{"a":1}`` are the
    same call); text that is not JSON as it is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


_ROLES = {"developer": "system"}
"""Roles that mean the same in another dialect (OpenAI's ``developer`` is a system prompt)."""


def _message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _ROLES.get(message.role, message.role),
                           "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.call_id, "name": call.name, "arguments": _canonical_json(call.arguments)}
            for call in message.tool_calls
        ]
    return out


def _tool(tool: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "kind": tool.kind}
    if tool.description:
        out["description"] = tool.description
    if tool.parameters:
        out["parameters"] = dict(tool.parameters)
    return out


def normalised_request(conversation: Conversation) -> dict[str, Any]:
    """``conversation`` as a fixture stores it and its key is made from."""
    return {
        "model": conversation.model,
        "max_tokens": conversation.max_tokens,
        "messages": [_message(message) for message in conversation.messages],
        "tools": [_tool(tool) for tool in conversation.tools],
    }


def fixture_key(request: Mapping[str, Any]) -> str:
    """The key of a normalised request: 32 hex digits of its SHA-256 (the file's name)."""
    canonical = json.dumps(
        {"tokenstream_fixture": FORMAT_VERSION, **request},
        ensure_ascii=False, sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


# -- events --------------------------------------------------------------------------------


def _event_fields(event: ReplyEvent) -> dict[str, Any]:
    if isinstance(event, TextDelta):
        return {"type": "text", "text": event.text}
    if isinstance(event, ReasoningDelta):
        return {"type": "reasoning", "text": event.text}
    if isinstance(event, ToolCallStart):
        return {"type": "tool_call_start", "index": event.index, "id": event.call_id,
                "name": event.name}
    if isinstance(event, ToolCallDelta):
        return {"type": "tool_call_delta", "index": event.index, "arguments": event.arguments}
    if isinstance(event, ToolCallEnd):
        return {"type": "tool_call_end", "index": event.index}
    if isinstance(event, Finish):
        return {"type": "finish", "reason": event.reason}
    if isinstance(event, Usage):
        fields: dict[str, Any] = {"type": "usage", "prompt_tokens": event.prompt_tokens,
                                  "completion_tokens": event.completion_tokens}
        if event.raw is not None:
            fields["raw"] = dict(event.raw)
        return fields
    if isinstance(event, ModelName):
        return {"type": "model", "name": event.name}
    if isinstance(event, Passthrough):
        return {"type": "passthrough", "delta": dict(event.delta)}
    raise ValueError(f"a recording holds no {type(event).__name__}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _At(_Strict):
    at_ms: float = Field(ge=0, allow_inf_nan=False)


class _Text(_At):
    type: Literal["text"]
    text: str

    def event(self) -> ReplyEvent:
        return TextDelta(self.text)


class _Reasoning(_At):
    type: Literal["reasoning"]
    text: str

    def event(self) -> ReplyEvent:
        return ReasoningDelta(self.text)


class _ToolCallStart(_At):
    type: Literal["tool_call_start"]
    index: int = Field(ge=0)
    id: str
    name: str

    def event(self) -> ReplyEvent:
        return ToolCallStart(self.index, self.id, self.name)


class _ToolCallDelta(_At):
    type: Literal["tool_call_delta"]
    index: int = Field(ge=0)
    arguments: str

    def event(self) -> ReplyEvent:
        return ToolCallDelta(self.index, self.arguments)


class _ToolCallEnd(_At):
    type: Literal["tool_call_end"]
    index: int = Field(ge=0)

    def event(self) -> ReplyEvent:
        return ToolCallEnd(self.index)


class _Finish(_At):
    type: Literal["finish"]
    reason: str

    def event(self) -> ReplyEvent:
        return Finish(self.reason)


class _Usage(_At):
    type: Literal["usage"]
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    raw: dict[str, Any] | None = None

    def event(self) -> ReplyEvent:
        return Usage(self.prompt_tokens, self.completion_tokens, self.raw)


class _Model(_At):
    type: Literal["model"]
    name: str

    def event(self) -> ReplyEvent:
        return ModelName(self.name)


class _Passthrough(_At):
    type: Literal["passthrough"]
    delta: dict[str, Any]

    def event(self) -> ReplyEvent:
        return Passthrough(self.delta)


_Event = Annotated[
    _Text | _Reasoning | _ToolCallStart | _ToolCallDelta | _ToolCallEnd | _Finish | _Usage
    | _Model | _Passthrough,
    Field(discriminator="type"),
]


# -- the request, as read back -------------------------------------------------------------


class _Call(_Strict):
    id: str
    name: str
    arguments: str


class _Message(_Strict):
    role: str
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[_Call] = Field(default_factory=list)


class _Tool(_Strict):
    name: str
    kind: str = "function"
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class _Request(_Strict):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    messages: list[_Message] = Field(min_length=1)
    tools: list[_Tool] = Field(default_factory=list)

    def conversation(self) -> Conversation:
        return Conversation(
            self.model,
            [ChatMessage(m.role, m.content, m.name, m.tool_call_id, tuple(
                ToolCall(c.id, c.name, c.arguments, n) for n, c in enumerate(m.tool_calls)
            )) for m in self.messages],
            self.max_tokens,
            tuple(ToolSpec(t.name, t.description, t.parameters, t.kind) for t in self.tools),
        )


class _Upstream(_Strict):
    dialect: str
    base_url: str | None = None


class _File(_Strict):
    tokenstream_fixture: Literal[1]
    recorded_at: str | None = None
    upstream: _Upstream
    request: _Request
    events: list[_Event] = Field(min_length=1)


# -- a fixture -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fixture:
    """One recorded reply and the request it answers."""

    key: str
    request: Mapping[str, Any]
    """The normalised request (``normalised_request``)."""
    upstream_dialect: str
    events: Sequence[TimedEvent]
    """Each event with its arrival, in seconds after the request was sent."""
    base_url: str | None = None
    recorded_at: str | None = None
    path: Path | None = None
    """The file it was read from or written to."""

    @classmethod
    def recorded(
        cls,
        conversation: Conversation,
        upstream_dialect: str,
        events: Sequence[TimedEvent],
        base_url: str | None,
    ) -> Fixture:
        request = normalised_request(conversation)
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return cls(fixture_key(request), request, upstream_dialect, tuple(events), base_url, now)


def fixture_text(fixture: Fixture) -> str:
    """The fixture as its file holds it: indented JSON, one line per event."""
    head: dict[str, Any] = {"tokenstream_fixture": FORMAT_VERSION}
    if fixture.recorded_at is not None:
        head["recorded_at"] = fixture.recorded_at
    head["upstream"] = {"dialect": fixture.upstream_dialect, "base_url": fixture.base_url}
    head["request"] = fixture.request
    lines = [
        json.dumps({"at_ms": round(at * 1000, 3), **_event_fields(event)}, ensure_ascii=False)
        for at, event in fixture.events
    ]
    text = json.dumps(head, ensure_ascii=False, indent=2)
    return text[:-2] + ',\n  "events": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"


def _problem(error: ValidationError) -> str:
    item = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in item["loc"])
    reason = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
    return f"{where}: {reason}" if where else reason


def read_fixture(path: Path) -> Fixture:
    """The fixture in ``path`` (JSON, or YAML for a ``.yaml``/``.yml`` file written by hand);
    ``FixtureError`` naming the file and the reason when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FixtureError(path, f"cannot be read: {exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise FixtureError(path, f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                           f"{exc}") from None
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        raise FixtureError(path, _problem(exc)) from None
    events: list[TimedEvent] = []
    for number, item in enumerate(parsed.events):
        at = item.at_ms / 1000
        if events and at < events[-1][0]:
            raise FixtureError(
                path, f"events.{number}.at_ms: {item.at_ms} is before the event above it "
                "(events are in the order they arrived)"
            )
        events.append((at, item.event()))
    request = normalised_request(parsed.request.conversation())
    return Fixture(
        fixture_key(request), request, parsed.upstream.dialect, tuple(events),
        parsed.upstream.base_url, parsed.recorded_at, path,
    )
