"""Anthropic Messages: ``POST /v1/messages``, streamed and whole.

Requests: Anthropic's body (``model``, ``messages``, ``max_tokens`` required as Anthropic
requires it, ``system`` as a string or text blocks, ``stream``); unknown fields are refused,
and fields that have no meaning for a scripted reply (``temperature``, ``tools``,
``tool_choice``, ``thinking``, ...) are accepted and ignored. A user message's
``tool_result`` blocks become ``tool`` messages (one each, ``tool_call_id`` their
``tool_use_id``), its text a user message after them; an assistant message's ``tool_use``
and ``thinking`` blocks are accepted and leave its text.

Replies (``AnthropicMessagesFormat``): every event is ``event: <type>`` and ``data:`` with
the same ``type``: ``message_start`` (content empty, ``usage.input_tokens``) -> content
blocks, each ``content_block_start`` -> ``content_block_delta`` x N -> ``content_block_stop``
with a rising ``index`` -> ``message_delta`` (``stop_reason``, cumulative
``usage.output_tokens``) -> ``message_stop``; no sentinel. Reasoning is a ``thinking``
block (``thinking_delta``, then a ``signature_delta`` before its stop, as Anthropic sends
it: an opaque value here), text a ``text`` block (``text_delta``), each tool call a
``tool_use`` block (``input_json_delta``). One block is open at a time: it closes when
another starts, at its call's ``ToolCallEnd``, or at the end; reasoning or text after
other content opens a new block. Anthropic has no way to go back to a closed block: an
upstream that interleaves the arguments of parallel tool calls (OpenAI's do not) has the
late fragments sent on the call's own ``index``, which the official SDK adds to that block.
An error is an ``error`` event. A whole reply is one ``message`` object (``message_body``).
Errors before the stream are ``{"type": "error", "error": {"type", "message"}}``
(``error_body``).
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from tokenstream.dialects.content import ContentPart, text_of
from tokenstream.dialects.framing import dumps, json_string
from tokenstream.dialects.overrides import (
    NO_OVERRIDES,
    PacingOverrides,
    validated,
    validated_json,
)
from tokenstream.dialects.partial_json import object_of
from tokenstream.engine.events import (
    Finish,
    ModelName,
    ReasoningDelta,
    ReplyContent,
    ReplyEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.messages import ChatMessage, ToolSpec
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import RequestError

__all__ = [
    "AnthropicMessagesFormat",
    "MessagesRequest",
    "error_body",
    "message_body",
    "parse_messages",
]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
"""The engine's finish reasons (OpenAI's words) in Anthropic's."""

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(error: RequestError) -> dict[str, Any]:
    """A refusal in Anthropic's shape (the status stays the error's)."""
    error_type = _ERROR_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": error_type, "message": error.message}}


# -- requests ------------------------------------------------------------------------------


def _as_blocks(content: Any) -> Any:
    """A string is short for one text block (and errors then name the block's field, not a
    branch of a union)."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


class _ToolResultBlock(BaseModel):
    model_config = ConfigDict(extra="allow")  # is_error, cache_control
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: Annotated[list[ContentPart], BeforeValidator(_as_blocks)] = []


class _ToolUseBlock(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


def _block_kind(block: Any) -> str:
    kind = block.get("type") if isinstance(block, dict) else getattr(block, "type", None)
    return kind if kind in ("tool_result", "tool_use") else "other"


_Block = Annotated[
    Annotated[_ToolResultBlock, Tag("tool_result")]
    | Annotated[_ToolUseBlock, Tag("tool_use")]
    | Annotated[ContentPart, Tag("other")],  # text, image, thinking, ...
    Discriminator(_block_kind),
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: Annotated[list[_Block], BeforeValidator(_as_blocks)]

    @model_validator(mode="after")
    def _tool_blocks_on_their_side(self) -> _Message:
        misplaced = "tool_result" if self.role == "assistant" else "tool_use"
        if any(block.type == misplaced for block in self.content):
            raise ValueError(f"{misplaced} blocks are not allowed in {self.role} messages")
        return self

    def chat_messages(self) -> list[ChatMessage]:
        """A user message's tool results (one ``tool`` message each), then its text; an
        assistant message's text with its ``tool_use`` blocks as its calls."""
        results = [
            ChatMessage("tool", text_of(block.content), tool_call_id=block.tool_use_id)
            for block in self.content
            if isinstance(block, _ToolResultBlock)
        ]
        text = "".join(
            block.text or ""
            for block in self.content
            if isinstance(block, ContentPart) and block.type == "text"
        )
        if results and not text:
            return results
        uses = [block for block in self.content if isinstance(block, _ToolUseBlock)]
        calls = tuple(
            ToolCall(block.id, block.name, dumps(block.input), number)
            for number, block in enumerate(uses)
        )
        return [*results, ChatMessage(self.role, text, tool_calls=calls)]


class _CustomTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    input_schema: dict[str, Any]


def _tool_spec(number: int, tool: dict[str, Any]) -> ToolSpec:
    """A tool of Anthropic's: ``{name, description, input_schema}``, or a built-in one (with
    a ``type`` such as ``web_search_20250305``)."""
    kind = tool.get("type")
    if isinstance(kind, str) and kind != "custom":
        return ToolSpec(str(tool.get("name") or kind), kind=kind)
    parsed = validated(_CustomTool, tool, f"tools.{number}.")
    return ToolSpec(parsed.name, parsed.description, parsed.input_schema)


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
    parsed = validated_json(_MessagesBody, body)
    messages = [ChatMessage("system", text_of(parsed.system))] if parsed.system else []
    for message in parsed.messages:
        messages += message.chat_messages()
    return MessagesRequest(
        model=parsed.model,
        messages=messages,
        max_tokens=parsed.max_tokens,
        stream=parsed.stream,
        overrides=parsed.tokenstream or NO_OVERRIDES,
        tools=tuple(_tool_spec(number, tool) for number, tool in enumerate(parsed.tools or ())),
    )


# -- replies -------------------------------------------------------------------------------


def new_message_id() -> str:
    return f"msg_{random.getrandbits(120):030x}"


def new_tool_use_id() -> str:
    return f"toolu_{random.getrandbits(120):030x}"


def new_signature() -> str:
    """A thinking block's ``signature``: opaque to clients, as Anthropic's (which only
    Anthropic can verify) are."""
    return base64.b64encode(random.randbytes(64)).decode()


def _event(event_type: str, data: str) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (event_type.encode(), data.encode())


_DELTA_EVENT = b"event: content_block_delta\ndata: "
_TEXT, _THINKING, _TOOL_USE = "text", "thinking", "tool_use"  # the kinds of block
_DELTA_FIELDS = {_TEXT: "text_delta", _THINKING: "thinking_delta", _TOOL_USE: "input_json_delta"}
_DELTA_VALUE = {_TEXT: "text", _THINKING: "thinking", _TOOL_USE: "partial_json"}


def _delta_head(index: int, kind: str) -> str:
    """A ``content_block_delta``'s JSON up to the delta's string."""
    return (
        f'{{"type":"content_block_delta","index":{index},'
        f'"delta":{{"type":"{_DELTA_FIELDS[kind]}","{_DELTA_VALUE[kind]}":'
    )


class AnthropicMessagesFormat:
    """One stream's events in Anthropic's Messages format (``engine.events.ReplyEncoder``)."""

    __slots__ = ("_blocks", "_delta_head", "_open", "_open_call", "_output_tokens", "_started",
                 "_stop_reason", "_tool_blocks", "input_tokens", "message_id", "model")

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.message_id = new_message_id()
        self.input_tokens = 0
        """The prompt's tokens, for ``message_start``: set once the prompt is counted."""
        self._started = False
        self._stop_reason = "end_turn"
        self._output_tokens = 0
        self._blocks = 0  # content blocks started: the next block's index
        self._open: str | None = None  # the open block's kind
        self._open_call: int | None = None  # the open tool_use block's ToolCallStart.index
        self._delta_head = ""  # the open block's content_block_delta JSON before the value
        self._tool_blocks: dict[int, int] = {}  # ToolCallStart.index -> its block's index

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

    def _open_block(self, kind: str, content_block: str) -> bytes:
        """Close the open block and start one of ``kind`` (``content_block`` its JSON)."""
        out = self._start() + self._close()
        index = self._blocks
        self._blocks += 1
        self._open = kind
        self._delta_head = _delta_head(index, kind)
        return out + _event(
            "content_block_start",
            f'{{"type":"content_block_start","index":{index},"content_block":{content_block}}}',
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index = self._blocks - 1
        out = b""
        if self._open == _THINKING:
            signature = {"type": "signature_delta", "signature": new_signature()}
            out = _event("content_block_delta", dumps(
                {"type": "content_block_delta", "index": index, "delta": signature}
            ))
        self._open = self._open_call = None
        stop = f'{{"type":"content_block_stop","index":{index}}}'
        return out + _event("content_block_stop", stop)

    def _delta(self, value: str) -> bytes:
        return b"%b%b}}\n\n" % (_DELTA_EVENT, (self._delta_head + json_string(value)).encode())

    def piece(self, piece: Piece) -> bytes:
        self._output_tokens += piece.tokens
        if self._open == _TEXT:
            return self._delta(piece.text)
        return self._open_block(_TEXT, '{"type":"text","text":""}') + self._delta(piece.text)

    def event(self, event: ReplyEvent) -> bytes:
        if isinstance(event, ReasoningDelta):
            out = b""
            if self._open != _THINKING:
                out = self._open_block(
                    _THINKING, '{"type":"thinking","thinking":"","signature":""}'
                )
            return out + self._delta(event.text)
        if isinstance(event, ToolCallStart):
            block = {"type": "tool_use", "id": event.call_id or new_tool_use_id(),
                     "name": event.name, "input": {}}
            out = self._open_block(_TOOL_USE, dumps(block))
            self._open_call = event.index
            self._tool_blocks[event.index] = self._blocks - 1
            return out
        if isinstance(event, ToolCallDelta):
            return self._tool_delta(event)
        if isinstance(event, ToolCallEnd):
            return self._close() if event.index == self._open_call else b""
        if isinstance(event, TextDelta):
            return self.piece(Piece(event.text))
        if isinstance(event, Finish):
            self._stop_reason = STOP_REASONS.get(event.reason, event.reason)
        elif isinstance(event, Usage):
            self._output_tokens = event.completion_tokens
        elif isinstance(event, ModelName):
            self.model = event.name
        return b""

    def _tool_delta(self, event: ToolCallDelta) -> bytes:
        if event.index == self._open_call:
            return self._delta(event.arguments)
        index = self._tool_blocks.get(event.index)
        if index is None:  # arguments of a call never started: no block to put them in
            return b""
        # a late fragment of a closed block (see the module's docstring)
        head = _delta_head(index, _TOOL_USE)
        return b"%b%b}}\n\n" % (_DELTA_EVENT, (head + json_string(event.arguments)).encode())

    def end(self) -> bytes:
        out = self._start() + self._close()
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


def message_body(model: str, content: ReplyContent, usage: Usage) -> dict[str, Any]:
    """A whole (not streamed) reply: one ``message`` object, its blocks thinking, text, then
    the tool calls. A tool call's ``input`` is its arguments parsed; arguments the token
    limit cut short give the members complete so far, as the SDK shows them streamed."""
    blocks: list[dict[str, Any]] = []
    if content.reasoning:
        blocks.append(
            {"type": "thinking", "thinking": content.reasoning, "signature": new_signature()}
        )
    if content.text:
        blocks.append({"type": "text", "text": content.text})
    blocks += [
        {"type": "tool_use", "id": call.call_id or new_tool_use_id(), "name": call.name,
         "input": object_of(call.arguments)}
        for call in content.tool_calls
    ]
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": content.model or model,
        "content": blocks,
        "stop_reason": STOP_REASONS.get(content.finish_reason, content.finish_reason),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    }
