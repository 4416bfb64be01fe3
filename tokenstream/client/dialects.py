"""The client side of each dialect: the request body its endpoint takes, and a reader that
turns its server-sent events back into reply events (``engine.events``).

Keyed by the names of ``dialects.catalog.DIALECTS``, which gives each dialect's path. A
reader reads what tokenstream and the real API send: text, reasoning (OpenAI chunks'
``reasoning_content``, Anthropic ``thinking`` blocks, Responses reasoning summaries, AI SDK
``reasoning-*`` parts), tool calls, the finish reason (in the dialect's own words), usage,
and errors in the dialect's in-stream shape (as ``ReplyError``).
"""

from __future__ import annotations

import json
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
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
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


class _BadEvent(ValueError):
    pass


def _object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise _BadEvent(f"an event that is not JSON: {data[:120]!r}") from None
    if not isinstance(value, dict):
        raise _BadEvent(f"an event that is not a JSON object: {data[:120]!r}")
    return value


def _error(error: Any, default_type: str = "error") -> ReplyError:
    """An error object (OpenAI's ``{message, type, code}``, Anthropic's ``{type, message}``)."""
    if not isinstance(error, dict):
        return ReplyError(str(error), default_type)
    code = error.get("code")
    return ReplyError(
        str(error.get("message") or "the server reported an error"),
        str(error.get("type") or default_type),
        None if code is None else str(code),
    )


class _Reader:
    """A failure to read an event ends the stream with an error, like an error event."""

    def __init__(self) -> None:
        self.done = False

    def read(self, event: ServerSentEvent) -> list[ReplyEvent]:
        if self.done:
            return []
        try:
            return self._read(event)
        except _BadEvent as exc:
            self.done = True
            return [ReplyError(f"The server sent {exc}.", "client_error")]

    def _read(self, event: ServerSentEvent) -> list[ReplyEvent]:
        raise NotImplementedError


class _ChatReader(_Reader):
    """``chat.completion.chunk`` objects, then ``[DONE]``."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: set[int] = set()

    def _read(self, event: ServerSentEvent) -> list[ReplyEvent]:
        if event.data == "[DONE]":
            self.done = True
            return []
        chunk = _object(event.data)
        if chunk.get("error"):
            return [_error(chunk["error"])]  # [DONE] follows
        items: list[ReplyEvent] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                items.append(ReasoningDelta(delta["reasoning_content"]))
            if delta.get("content"):
                items.append(TextDelta(delta["content"]))
            for call in delta.get("tool_calls") or []:
                items += self._call(call)
            if choice.get("finish_reason"):
                items.append(Finish(choice["finish_reason"]))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            items.append(Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)))
        return items

    def _call(self, call: dict[str, Any]) -> list[ReplyEvent]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        items: list[ReplyEvent] = []
        if index not in self._calls:
            self._calls.add(index)
            items.append(ToolCallStart(index, call.get("id") or "", function.get("name") or ""))
        if function.get("arguments"):
            items.append(ToolCallDelta(index, function["arguments"]))
        return items


class _AnthropicReader(_Reader):
    """Anthropic Messages events, ``message_start`` to ``message_stop``."""

    def __init__(self) -> None:
        super().__init__()
        self._tool_blocks: set[int] = set()
        self._input_tokens = 0

    def _read(self, event: ServerSentEvent) -> list[ReplyEvent]:
        data = _object(event.data)
        kind = data.get("type")
        index = data.get("index", 0)
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [TextDelta(delta.get("text", ""))]
            if delta.get("type") == "thinking_delta":
                return [ReasoningDelta(delta.get("thinking", ""))]
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                return [ToolCallDelta(index, delta["partial_json"])]
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._tool_blocks.add(index)
                return [ToolCallStart(index, block.get("id", ""), block.get("name", ""))]
        elif kind == "content_block_stop" and index in self._tool_blocks:
            return [ToolCallEnd(index)]
        elif kind == "message_start":
            usage = (data.get("message") or {}).get("usage") or {}
            self._input_tokens = usage.get("input_tokens", 0)
        elif kind == "message_delta":
            items: list[ReplyEvent] = []
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            if stop_reason:
                items.append(Finish(stop_reason))
            usage = data.get("usage") or {}
            if "output_tokens" in usage:
                items.append(Usage(self._input_tokens, usage["output_tokens"]))
            return items
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.done = True
            return [_error(data.get("error"))]
        return []


class _ResponsesReader(_Reader):
    """OpenAI Responses events, ``response.created`` to ``response.completed`` (or
    ``response.incomplete``, ``response.failed``, ``error``)."""

    def _read(self, event: ServerSentEvent) -> list[ReplyEvent]:
        data = _object(event.data)
        kind = data.get("type")
        if kind == "response.output_text.delta":
            return [TextDelta(data.get("delta", ""))]
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [ReasoningDelta(data.get("delta", ""))]
        if kind == "response.function_call_arguments.delta":
            return [ToolCallDelta(data.get("output_index", 0), data.get("delta", ""))]
        item = data.get("item") or {}
        if kind == "response.output_item.added" and item.get("type") == "function_call":
            return [ToolCallStart(data.get("output_index", 0), item.get("call_id", ""),
                                  item.get("name", ""))]
        if kind == "response.output_item.done" and item.get("type") == "function_call":
            return [ToolCallEnd(data.get("output_index", 0))]
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
            return self._ending(data.get("response") or {})
        if kind == "response.failed":
            self.done = True
            return [_error((data.get("response") or {}).get("error"))]
        if kind == "error":
            self.done = True
            return [ReplyError(str(data.get("message")), str(data.get("code") or "error"))]
        return []

    @staticmethod
    def _ending(response: dict[str, Any]) -> list[ReplyEvent]:
        reason = (response.get("incomplete_details") or {}).get("reason")
        items: list[ReplyEvent] = [Finish(reason or response.get("status") or "completed")]
        usage = response.get("usage")
        if isinstance(usage, dict):
            items.append(Usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0)))
        return items


class _AISDKReader(_Reader):
    """The Vercel AI SDK UI message stream: ``data: {"type": ...}`` parts, then ``[DONE]``."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[str, int] = {}

    def _read(self, event: ServerSentEvent) -> list[ReplyEvent]:
        if event.data == "[DONE]":
            self.done = True
            return []
        part = _object(event.data)
        kind = part.get("type")
        if kind == "text-delta":
            return [TextDelta(part.get("delta", ""))]
        if kind == "reasoning-delta":
            return [ReasoningDelta(part.get("delta", ""))]
        call_id = part.get("toolCallId", "")
        if kind == "tool-input-start":
            index = self._calls.setdefault(call_id, len(self._calls))
            return [ToolCallStart(index, call_id, part.get("toolName", ""))]
        if kind == "tool-input-delta" and call_id in self._calls:
            return [ToolCallDelta(self._calls[call_id], part.get("inputTextDelta", ""))]
        if kind == "tool-input-available" and call_id in self._calls:
            return [ToolCallEnd(self._calls[call_id])]
        if kind == "finish":
            return [Finish(part.get("finishReason") or "stop")]
        if kind == "error":
            return [ReplyError(str(part.get("errorText")), "error")]
        return []


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
    "openai-chat": DialectClient(_chat_body, _ChatReader),
    "openai-responses": DialectClient(_responses_body, _ResponsesReader),
    "anthropic": DialectClient(
        _anthropic_body, _AnthropicReader, {"anthropic-version": "2023-06-01"}
    ),
    "ai-sdk-ui": DialectClient(_ai_sdk_body, _AISDKReader),
}
"""By dialect name; a dialect is offered once ``DIALECTS`` lists it too."""
