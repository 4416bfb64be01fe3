"""Stream events that are not reply text, carried beside the pieces in order and never paced.

An upstream chunk can hold more than ``delta.content``: tool call deltas, a refusal, the
finish reason, the usage, the name of the model that answered. Text is re-tokenized and
re-paced; everything else becomes a ``Passthrough`` that the wire format forwards as it
came, after every piece of text that arrived before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Passthrough"]


@dataclass(frozen=True, slots=True)
class Passthrough:
    """What an upstream chunk carries besides its text, to be forwarded unchanged."""

    delta: Mapping[str, Any] | None = None
    """The choice's delta without ``content`` and ``role``: ``tool_calls``, ``refusal``, ..."""
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    model: str | None = None
    """The upstream's model name: on its first chunk, and again only if it changes."""
