"""The conversation a source answers: plain values, independent of HTTP and of any dialect.

``Conversation`` is a request in neutral terms (messages, tool calls and results, tool
definitions): what every dialect's parser can give, and what a request in another dialect is
built from for an upstream (``sources.upstream_bodies``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenstream.engine.events import ToolCall

__all__ = [
    "ChatMessage",
    "Conversation",
    "ToolSpec",
    "last_tool_result",
    "last_user_text",
]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    """``system``, ``user``, ``assistant``, or ``tool`` (a tool's result, in every dialect)."""
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    """For a ``tool`` message: the id of the call it answers."""
    tool_calls: tuple[ToolCall, ...] = ()
    """For an ``assistant`` message: the tool calls it made (after its text)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """Its arguments' JSON schema."""
    kind: str = "function"
    """``function``, or the type of a built-in tool (``web_search``, ...), which has no
    equivalent in another dialect."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """A request in neutral terms, for an upstream of another dialect than the client's."""

    model: str
    messages: Sequence[ChatMessage]
    max_tokens: int | None = None
    tools: Sequence[ToolSpec] = ()


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """The text of the last ``user`` message, or ``""`` when there is none."""
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""


def last_tool_result(messages: Sequence[ChatMessage]) -> ChatMessage | None:
    """The last message, when it is a tool's result (the conversation waits on the reply to
    a tool call), else None."""
    if messages and messages[-1].role == "tool":
        return messages[-1]
    return None
