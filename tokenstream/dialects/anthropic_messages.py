"""Anthropic Messages: ``POST /v1/messages``, streamed and whole.

Requests: Anthropic's body (``model``, ``messages``, ``max_tokens`` required as Anthropic
requires it, ``system`` as a string or text blocks, ``stream``); unknown fields are refused,
and fields that have no meaning for a scripted reply (``temperature``, ``tools``, ...) are
accepted and ignored.

Replies (``AnthropicMessagesFormat``): every event is ``event: <type>`` and ``data:`` with
the same ``type``: ``message_start`` (content empty, ``usage.input_tokens``) ->
``content_block_start`` (text) -> ``content_block_delta`` (``text_delta``) x N ->
``content_block_stop`` -> ``message_delta`` (``stop_reason``, cumulative
``usage.output_tokens``) -> ``message_stop``; no sentinel. An error is an ``error`` event. A
whole reply is one ``message`` object (``message_body``). Errors before the stream are
``{"type": "error", "error": {"type", "message"}}`` (``error_body``).

Not yet carried: tool calls and reasoning (``tool_use`` and ``thinking`` blocks) are left
out of this dialect's stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenstream.dialects.content import ContentPart, text_of
from tokenstream.dialects.framing import dumps, json_string
from tokenstream.dialects.overrides import NO_OVERRIDES, PacingOverrides, invalid_request
from tokenstream.engine.events import Finish, ModelName, ReplyEvent, Usage
from tokenstream.engine.messages import ChatMessage, RequestedToolCall, ToolSpec
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import RequestError

__all__ = [
    "AnthropicMessagesFormat",
    "MessagesRequest",
    "error_body",
    "message_body",
    "parse_messages",
]

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
"""The engine's finish reasons (OpenAI's words) in Anthropic's."""

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(error: RequestError) -> dict[str, Any]:
    """A refusal in Anthropic's shape (the status stays the error's)."""
    error_type = _ERROR_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": error_type, "message": error.message}}


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: str | list[ContentPart]


class _CustomTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    input_schema: dict[str, Any]


class _MessagesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    messages: list[_Message] = Field(min_length=1, max_length=10_000)
    max_tokens: int = Field(ge=1, le=1_000_000)
    system: str | list[ContentPart] | None = None
    stream: bool = False
    tokenstream: PacingOverrides | None = None

    # Accepted for compatibility, without effect on a scripted reply.
    metadata: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    thinking: Any = None
    service_tier: str | None = None


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    model: str
    messages: list[ChatMessage]
    max_tokens: int
    stream: bool
    overrides: PacingOverrides
    tools: tuple[ToolSpec, ...] = ()


def parse_messages(body: bytes) -> MessagesRequest:
    try:
        parsed = _MessagesBody.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None
    messages = [ChatMessage("system", text_of(parsed.system))] if parsed.system else []
    for message in parsed.messages:
        messages += _chat_messages(message)
    return MessagesRequest(
        model=parsed.model,
        messages=messages,
        max_tokens=parsed.max_tokens,
        stream=parsed.stream,
        overrides=parsed.tokenstream or NO_OVERRIDES,
        tools=tuple(_tool_spec(number, tool) for number, tool in enumerate(parsed.tools or ())),
    )


def _chat_messages(message: _Message) -> list[ChatMessage]:
    """One Anthropic message as neutral messages: a user turn's ``tool_result`` blocks each
    a ``tool`` message (before its text), an assistant turn's ``tool_use`` blocks its calls."""
    if isinstance(message.content, str):
        return [ChatMessage(message.role, message.content)]
    results: list[ChatMessage] = []
    calls: list[RequestedToolCall] = []
    for part in message.content:
        extra = part.model_extra or {}
        if part.type == "tool_result":
            call_id = str(extra.get("tool_use_id", ""))
            results.append(ChatMessage("tool", _result_text(extra.get("content")),
                                       tool_call_id=call_id))
        elif part.type == "tool_use":
            arguments = dumps(extra.get("input") or {})
            calls.append(RequestedToolCall(str(extra.get("id", "")), str(extra.get("name", "")),
                                           arguments))
    text = text_of(message.content)
    if results and not text:
        return results
    return [*results, ChatMessage(message.role, text, tool_calls=tuple(calls))]


def _result_text(content: Any) -> str:
    """A ``tool_result``'s content: a string, or blocks of which the text ones count."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        block["text"] for block in content
        if isinstance(block, dict) and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def _tool_spec(number: int, tool: dict[str, Any]) -> ToolSpec:
    """A tool of Anthropic's: ``{name, description, input_schema}``, or a built-in one (with
    a ``type`` such as ``web_search_20250305``)."""
    kind = tool.get("type")
    if isinstance(kind, str) and kind != "custom":
        return ToolSpec(str(tool.get("name") or kind), kind=kind)
    try:
        parsed = _CustomTool.model_validate(tool)
    except ValidationError as exc:
        raise invalid_request(exc, f"tools.{number}.") from None
    return ToolSpec(parsed.name, parsed.description, parsed.input_schema)


def new_message_id() -> str:
    return f"msg_{random.getrandbits(120):030x}"


def _event(event_type: str, data: str) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (event_type.encode(), data.encode())


_DELTA_HEAD = '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'


class AnthropicMessagesFormat:
    """One stream's events in Anthropic's Messages format (``engine.events.ReplyEncoder``)."""

    __slots__ = ("_block_open", "_output_tokens", "_started", "_stop_reason", "input_tokens",
                 "message_id", "model")

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.message_id = new_message_id()
        self.input_tokens = 0
        """The prompt's tokens, for ``message_start``: set once the prompt is counted."""
        self._started = False
        self._block_open = False
        self._stop_reason = "end_turn"
        self._output_tokens = 0

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return _event("message_start", dumps({"type": "message_start", "message": message}))

    def piece(self, piece: Piece) -> bytes:
        out = self._start()
        if not self._block_open:
            self._block_open = True
            out += _event(
                "content_block_start",
                '{"type":"content_block_start","index":0,'
                '"content_block":{"type":"text","text":""}}',
            )
        self._output_tokens += piece.tokens
        return out + _event("content_block_delta", _DELTA_HEAD + json_string(piece.text) + "}}")

    def event(self, event: ReplyEvent) -> bytes:
        if isinstance(event, Finish):
            self._stop_reason = STOP_REASONS.get(event.reason, event.reason)
        elif isinstance(event, Usage):
            self._output_tokens = event.completion_tokens
        elif isinstance(event, ModelName):
            self.model = event.name
        return b""

    def end(self) -> bytes:
        out = self._start()
        if self._block_open:
            self._block_open = False
            out += _event("content_block_stop", '{"type":"content_block_stop","index":0}')
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": self._output_tokens},
        }
        out += _event("message_delta", dumps(delta))
        return out + _event("message_stop", '{"type":"message_stop"}')

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        anthropic_type = {
            "server_error": "api_error",
            "upstream_error": "api_error",
            "requests": "rate_limit_error",
        }.get(error_type, error_type)
        body = {"type": "error", "error": {"type": anthropic_type, "message": message}}
        return _event("error", dumps(body))


def message_body(
    model: str, text: str, finish_reason: str, usage: Usage
) -> dict[str, Any]:
    """A whole (not streamed) reply: one ``message`` object."""
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": STOP_REASONS.get(finish_reason, finish_reason),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    }
