"""The typed reply model: what every source produces and every dialect encodes.

A reply is a sequence of events in order::

    ModelName?  (TextDelta | ReasoningDelta | ToolCallStart ToolCallDelta* ToolCallEnd
                 | Passthrough)*  Finish?  Usage?  ReplyError?

Sources (scripted, echo, an upstream model) yield these; the engine tokenizes and paces the
text (``TextDelta`` becomes ``tokenizer.Piece`` events, timed) and keeps every other event in
its place: it goes out right after the text that came before it. A dialect's
``ReplyEncoder`` turns pieces and events into its wire format.

``Passthrough`` carries what a source received but the model does not type (an OpenAI
``refusal``, ``audio`` or ``function_call`` delta field): a dialect that speaks the same API
forwards it unchanged, any other leaves it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tokenstream.engine.tokenizer import Piece
from tokenstream.sse.ids import EventIds

__all__ = [
    "Finish",
    "ModelName",
    "PacedEvent",
    "Passthrough",
    "ReasoningDelta",
    "ReplyContent",
    "ReplyEncoder",
    "ReplyError",
    "ReplyEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Reply text as it came from the source: tokenized and paced by the engine."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Reasoning ("thinking") text, sent in its place, not paced as reply tokens."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    index: int
    """The call's position among the reply's tool calls (0, 1, ...)."""
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    arguments: str
    """A part of the call's JSON arguments, as the source streamed it."""


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    index: int


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str
    """``stop``, ``length``, ``tool_calls``, ``content_filter``, or what an upstream said."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    raw: Mapping[str, Any] | None = field(default=None, compare=False)
    """The source's own usage object (with its details), when it sent one: forwarded as is."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        if self.raw is not None:
            return dict(self.raw)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class ModelName:
    """The model that answers: announced by an upstream, and again if it changes."""

    name: str


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Fields of a source's message delta the model does not type, to forward unchanged."""

    delta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ReplyError:
    """The source failed after the reply began: the stream ends with the dialect's error."""

    message: str
    error_type: str = "upstream_error"
    code: str | None = None


ReplyEvent = (
    TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | Finish
    | Usage
    | ModelName
    | Passthrough
    | ReplyError
)


@dataclass(frozen=True, slots=True)
class PacedEvent:
    """An event with its place in a scheduled reply's pacing: a token (or chunk) of reasoning
    or of a tool call's arguments, paced like text (``tokens`` > 0), or a tool call's start or
    end, sent with the token next to it (0)."""

    event: ReplyEvent
    tokens: int


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One whole tool call an assistant made: in a reply (``ReplyContent``), or in an
    assistant message of a request's conversation (``ChatMessage.tool_calls``)."""

    call_id: str
    name: str
    arguments: str = ""
    """The JSON arguments as text, as the assistant gave them (in a reply, cut short if the
    token limit cut them)."""
    index: int = 0
    """Its place among the calls of its reply or message (a reply's ``ToolCallStart.index``)."""


@dataclass(slots=True)
class ReplyContent:
    """A reply's events added up: what a dialect's whole (not streamed) answer shows."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage | None = None
    model: str | None = None

    def add(self, event: ReplyEvent | Piece) -> None:
        """Add one event (or a piece of text) in reply order."""
        if isinstance(event, (Piece, TextDelta)):
            self.text += event.text
        elif isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, ToolCallStart):
            self.tool_calls.append(ToolCall(event.call_id, event.name, index=event.index))
        elif isinstance(event, ToolCallDelta):
            for number, call in enumerate(self.tool_calls):
                if call.index == event.index:
                    self.tool_calls[number] = replace(
                        call, arguments=call.arguments + event.arguments
                    )
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, ModelName):
            self.model = event.name


class ReplyEncoder(Protocol):
    """A dialect's wire format for one stream: pure, bytes out, no I/O."""

    ids: EventIds
    """What numbers the events it frames: each begins with ``ids.next_line()``
    (``sse.ids.UNNUMBERED`` unless the runner gives the stream's own)."""

    def piece(self, piece: Piece) -> bytes:
        """The event(s) for one timed piece of reply text (the hot path)."""

    def event(self, event: ReplyEvent) -> bytes:
        """The event(s) for anything but text; empty when the dialect has no form for it."""

    def end(self) -> bytes:
        """What a complete reply ends with, after its ``Finish`` and ``Usage`` events."""

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        """An error in the dialect's in-stream error shape, and the stream's ending."""
