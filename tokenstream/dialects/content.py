"""Message content as text, as every dialect's request parser needs it: a string, or a list
of typed parts of which the text parts count (the rest, images and the like, are ignored)."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel, ConfigDict

__all__ = ["ContentPart", "text_of"]


class ContentPart(BaseModel):
    """One part of a message's content: ``{"type": ..., "text": ...}`` and whatever else."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


def text_of(
    content: str | list[ContentPart] | None, text_types: Collection[str] = ("text",)
) -> str:
    """The text of ``content``: the string, or its parts of ``text_types`` joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text or "" for part in content if part.type in text_types)
