"""The client side of each dialect: the request body its endpoint takes, and a reader that
turns its server-sent events back into reply events (``engine.events``).

Keyed by the names of ``dialects.catalog.DIALECTS``, which gives each dialect's path. The
readers are the upstream source's decoders (``sources.openai_chunks``,
``sources.responses_events``, ``sources.anthropic_events``), given one parsed event at a
time; the AI SDK UI message stream, which no upstream speaks, has its decoder here. Finish
reasons are in the engine's words (``stop``, ``length``, ``tool_calls``, ...) whatever the
dialect; an error event, a broken event or a stream cut short is a ``ReplyError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenstream.engine.events import (
    Finish,
    ReasoningDelta,
    ReplyError,
    ReplyEvent,
    TextDelta,
    Usage,
)
from tokenstream.sources.anthropic_events import AnthropicEventDecoder
from tokenstream.sources.event_stream import JsonEventDecoder, ToolCallTracker, str_or_empty
from tokenstream.sources.openai_chunks import ChunkDecoder
from tokenstream.sources.responses_events import ResponsesEventDecoder
from tokenstream.sse.parser import ServerSentEvent

__all__ = ["ANTHROPIC_MAX_TOKENS", "CLIENTS", "DialectClient", "ReplyRequest", "StreamReader"]

ANTHROPIC_MAX_TOKENS = 4096
"""``max_tokens`` sent to Anthropic's endpoint when none is given: the API requires one."""


@dataclass(frozen=True, slots=True)
class ReplyRequest:
    prompt: str
    model: str
    max_tokens: int | None = None
    pacing: Mapping[str, Any] = field(default_factory=dict)
    """The ``tokenstream`` object: profile, source and pacing overrides."""


class StreamReader(Protocol):
    done: bool
    """The dialect's last event arrived (or an error that ends the stream)."""

    def read(self, event: ServerSentEvent) -> list[ReplyEvent]: ...

    def close(self) -> list[ReplyEvent]:
        """The body ended: what was held back, and a ``ReplyError`` if the reply was cut
        short."""
        ...


class _DecoderReader:
    """A decoder's events as the terminal client reads them: its failure is a
    ``ReplyError`` event, and ends the stream."""

    def __init__(self, decoder: JsonEventDecoder) -> None:
        self._decoder = decoder
        self.done = False

    def read(self, event: ServerSentEvent) -> list[ReplyEvent]:
        return [] if self.done else self._settle(self._decoder.decode(event))

    def close(self) -> list[ReplyEvent]:
        return [] if self.done else self._settle(self._decoder.close())

    def _settle(self, items: list[ReplyEvent]) -> list[ReplyEvent]:
        error = self._decoder.error
        if error is not None:
            items.append(ReplyError(error.message, error.error_type, error.code))
        self.done = self._decoder.done or error is not None
        return items


class _UIMessageStreamDecoder(JsonEventDecoder):
    """The Vercel AI SDK UI message stream: ``data: {"type": ...}`` parts, then ``[DONE]``.

    The ``finish`` part's ``finishReason`` is in the SDK's words (``tool-calls``), and its
    usage is ``messageMetadata.totalUsage`` (a ``LanguageModelUsage``), where tokenstream
    puts it.
    """

    def __init__(self, *, peer: str) -> None:
        super().__init__(peer=peer)
        self._calls = ToolCallTracker()
        """The tool calls begun, by ``toolCallId``."""

    def _event(self, event: ServerSentEvent, items: list[ReplyEvent]) -> None:
        if event.data == "[DONE]":
            self.done = True
            return
        part = self._json(event.data)
        kind = part.get("type")
        delta = str_or_empty(part.get("delta"))
        if kind == "text-delta" and delta:
            items.append(TextDelta(delta))
        elif kind == "reasoning-delta" and delta:
            items.append(ReasoningDelta(delta))
        elif kind == "tool-input-start":
            self._call_start(part, items)
        elif kind == "tool-input-delta":
            index = self._open_call(part)
            if index is not None:
                self._calls.arguments(index, str_or_empty(part.get("inputTextDelta")), items)
        elif kind in ("tool-input-available", "tool-input-error"):
            index = self._open_call(part)
            if index is not None:
                self._calls.end(index, items)
        elif kind == "finish":
            self._finish(part, items)
        elif kind == "error":
            raise self._failure(part.get("errorText"))

    def _call_start(self, part: dict[str, Any], items: list[ReplyEvent]) -> None:
        call_id = str_or_empty(part.get("toolCallId"))
        self._calls.begin(call_id, call_id, str_or_empty(part.get("toolName")), items)

    def _open_call(self, part: dict[str, Any]) -> int | None:
        return self._calls.open_index_of(str_or_empty(part.get("toolCallId")))

    def _finish(self, part: dict[str, Any], items: list[ReplyEvent]) -> None:
        for index in self._calls.open_calls():
            self._calls.end(index, items)
        reason = str_or_empty(part.get("finishReason")) or "stop"
        items.append(Finish(reason.replace("-", "_")))  # tool-calls, content-filter
        metadata = part.get("messageMetadata")
        usage = metadata.get("totalUsage") if isinstance(metadata, dict) else None
        if isinstance(usage, dict):
            items.append(Usage(_count(usage.get("inputTokens")), _count(usage.get("outputTokens"))))
        self.finished = True


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


class _Decoding(Protocol):
    def __call__(self, *, peer: str) -> JsonEventDecoder: ...


def _reader(decoder: _Decoding) -> Callable[[], StreamReader]:
    """Readers on ``decoder``, whose failures name the other end "the server"."""
    return lambda: _DecoderReader(decoder(peer="server"))


@dataclass(frozen=True, slots=True)
class DialectClient:
    body: Callable[[ReplyRequest], dict[str, Any]]
    reader: Callable[[], StreamReader]
    headers: Mapping[str, str] = field(default_factory=dict)


def _pacing(request: ReplyRequest) -> dict[str, Any]:
    return {"tokenstream": dict(request.pacing)} if request.pacing else {}


def _chat_body(request: ReplyRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": "user", "content": request.prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    return body | _pacing(request)


def _responses_body(request: ReplyRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model, "input": request.prompt, "stream": True}
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    return body | _pacing(request)


def _anthropic_body(request: ReplyRequest) -> dict[str, Any]:
    return {
        "model": request.model,
        "max_tokens": request.max_tokens or ANTHROPIC_MAX_TOKENS,
        "messages": [{"role": "user", "content": request.prompt}],
        "stream": True,
    } | _pacing(request)


def _ai_sdk_body(request: ReplyRequest) -> dict[str, Any]:
    """As ``useChat``'s ``DefaultChatTransport`` sends it (the model is the server's choice;
    ``max_tokens`` has no field in this protocol)."""
    message = {"id": uuid.uuid4().hex, "role": "user",
               "parts": [{"type": "text", "text": request.prompt}]}
    return {"id": uuid.uuid4().hex, "messages": [message], "trigger": "submit-message"} | (
        _pacing(request)
    )


CLIENTS: dict[str, DialectClient] = {
    "openai-chat": DialectClient(_chat_body, _reader(ChunkDecoder)),
    "openai-responses": DialectClient(_responses_body, _reader(ResponsesEventDecoder)),
    "anthropic": DialectClient(
        _anthropic_body, _reader(AnthropicEventDecoder), {"anthropic-version": "2023-06-01"}
    ),
    "ai-sdk-ui": DialectClient(_ai_sdk_body, _reader(_UIMessageStreamDecoder)),
}
"""By dialect name; a dialect is offered once ``DIALECTS`` lists it too."""
