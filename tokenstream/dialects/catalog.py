"""The dialects a reply can be streamed in, in one table (``DIALECTS``).

``GET /v1/stream?dialect=NAME`` encodes its reply with the entry's encoder, ``GET
/v1/dialects`` lists the entries for the demo page's selector, and ``tokenstream stream
--dialect NAME`` posts to the entry's path. Adding a dialect is one entry here.

The encoder factories import their dialect's module when first called: the terminal client
and ``tokenstream --help`` read the table without loading the server's dialects (pydantic,
the tokenizer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tokenstream.engine.events import ReplyEncoder

__all__ = ["AI_SDK_UI", "DIALECTS", "Dialect", "EncoderOptions", "PromptCounted"]


@dataclass(frozen=True, slots=True)
class EncoderOptions:
    """What a stream asks of its encoder; a dialect without ``custom_framing`` uses only
    ``model``."""

    model: str
    include_usage: bool = False
    event: str | None = None
    sentinel: str = "[DONE]"


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    """As ``?dialect=`` and ``--dialect`` spell it."""
    title: str
    path: str
    """The endpoint that speaks it (``POST``)."""
    encoder: Callable[[EncoderOptions], ReplyEncoder]
    custom_framing: bool = False
    """The event name, ``id:`` numbering, sentinel and ``include_usage`` are tokenstream's to
    choose (OpenAI chunks). Any other dialect's events are named and ended by its API."""
    headers: tuple[tuple[str, str], ...] = ()
    """Response headers the dialect's streams carry besides the SSE ones."""

    def describe(self, path: str | None = None) -> dict[str, str]:
        """``path``: where this server serves it, when that is configurable."""
        return {"name": self.name, "title": self.title, "path": path or self.path}


class PromptCounted(Protocol):
    """An encoder whose first event carries the prompt's token count (Anthropic's
    ``message_start``): set once the prompt is counted, before the first event."""

    input_tokens: int


def _openai_chat(options: EncoderOptions) -> ReplyEncoder:
    from tokenstream.dialects.openai_chat import OpenAIChunkFormat

    return OpenAIChunkFormat(
        model=options.model,
        include_usage=options.include_usage,
        event=options.event,
        sentinel=options.sentinel,
    )


def _openai_responses(options: EncoderOptions) -> ReplyEncoder:
    from tokenstream.dialects.openai_responses import ResponsesFormat

    return ResponsesFormat(model=options.model)


def _anthropic(options: EncoderOptions) -> ReplyEncoder:
    from tokenstream.dialects.anthropic_messages import AnthropicMessagesFormat

    return AnthropicMessagesFormat(model=options.model)


def _ai_sdk_ui(options: EncoderOptions) -> ReplyEncoder:
    from tokenstream.dialects.ai_sdk_ui import UIMessageStreamFormat, new_message_id

    return UIMessageStreamFormat(message_id=new_message_id())


AI_SDK_UI = "ai-sdk-ui"
"""The AI SDK's dialect, whose path is ``server.ai_sdk_chat_path`` (the entry has the
default)."""

DIALECTS: dict[str, Dialect] = {
    dialect.name: dialect
    for dialect in (
        Dialect("openai-chat", "OpenAI chat completions", "/v1/chat/completions", _openai_chat,
                custom_framing=True),
        Dialect("openai-responses", "OpenAI Responses", "/v1/responses", _openai_responses),
        Dialect("anthropic", "Anthropic Messages", "/v1/messages", _anthropic),
        Dialect(AI_SDK_UI, "AI SDK UI message stream", "/api/chat", _ai_sdk_ui,
                headers=(("x-vercel-ai-ui-message-stream", "v1"),)),
    )
}
"""Every dialect by name, in the order the page and ``--help`` show them."""
