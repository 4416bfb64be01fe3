"""The conversation a source answers: plain values, independent of HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ChatMessage", "last_tool_result", "last_user_text"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    """``system``, ``user``, ``assistant``, or ``tool`` (a tool's result, in every dialect)."""
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    """For a ``tool`` message: the id of the call it answers."""


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
