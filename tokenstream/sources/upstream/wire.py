"""What differs between the APIs an upstream may speak (``upstream.dialect``): the path a
reply is asked at, how the key is sent, and the decoder of the streamed answer."""

from __future__ import annotations

from tokenstream.config import UpstreamDialect
from tokenstream.sources.anthropic_events import AnthropicEventDecoder
from tokenstream.sources.event_stream import StreamDecoder
from tokenstream.sources.openai_chunks import ChunkDecoder
from tokenstream.sources.responses_events import ResponsesEventDecoder

__all__ = ["ANTHROPIC_VERSION", "REPLY_PATHS", "decoder_for", "dialect_headers"]

REPLY_PATHS: dict[UpstreamDialect, str] = {
    "openai-chat": "/chat/completions",
    "openai-responses": "/responses",
    "anthropic": "/messages",
}
"""Where a reply is asked for, after ``upstream.base_url``."""

ANTHROPIC_VERSION = "2023-06-01"
"""The ``anthropic-version`` every request to an Anthropic upstream names."""


def dialect_headers(dialect: UpstreamDialect, key: str | None) -> dict[str, str]:
    """The headers a request in ``dialect`` carries: the key, the way the API wants it."""
    if dialect == "anthropic":
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key is not None:
            headers["x-api-key"] = key
        return headers
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def decoder_for(
    dialect: UpstreamDialect, secrets: tuple[str, ...], max_event_chars: int
) -> StreamDecoder:
    if dialect == "anthropic":
        return AnthropicEventDecoder(secrets, max_event_chars)
    if dialect == "openai-responses":
        return ResponsesEventDecoder(secrets, max_event_chars)
    return ChunkDecoder(secrets, max_event_chars)
