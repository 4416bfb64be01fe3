"""The conversation a source answers: plain values, independent of HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ChatMessage", "last_user_text"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    name: str | None = None


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """The text of the last ``user`` message, or ``""`` when there is none."""
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""
