"""Anthropic Messages: ``POST /v1/messages``, streamed and whole.

Requests are parsed in ``anthropic_messages_request`` (``parse_messages``, importable from
here too).

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
from typing import Any

from tokenstream.dialects.anthropic_messages_request import MessagesRequest, parse_messages
from tokenstream.dialects.framing import dumps, json_string
from tokenstream.dialects.partial_json import object_of
from tokenstream.engine.events import (
    Finish,
    ModelName,
    ReasoningDelta,
    ReplyContent,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import RequestError
from tokenstream.sse.ids import UNNUMBERED, EventIds

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


def new_message_id() -> str:
    return f"msg_{random.getrandbits(120):030x}"


def new_tool_use_id() -> str:
    return f"toolu_{random.getrandbits(120):030x}"


def new_signature() -> str:
    """A thinking block's ``signature``: opaque to clients, as Anthropic's (which only
    Anthropic can verify) are."""
    return base64.b64encode(random.randbytes(64)).decode()


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
                 "_stop_reason", "_tool_blocks", "ids", "input_tokens", "message_id", "model")

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
        self.ids: EventIds = UNNUMBERED

    def _event(self, event_type: str, data: str) -> bytes:
        return b"%bevent: %b\ndata: %b\n\n" % (
            self.ids.next_line(), event_type.encode(), data.encode()
        )

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
        return self._event("message_start", dumps({"type": "message_start", "message": message}))

    def _open_block(self, kind: str, content_block: str) -> bytes:
        """Close the open block and start one of ``kind`` (``content_block`` its JSON)."""
        out = self._start() + self._close()
        index = self._blocks
        self._blocks += 1
        self._open = kind
        self._delta_head = _delta_head(index, kind)
        return out + self._event(
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
            out = self._event("content_block_delta", dumps(
                {"type": "content_block_delta", "index": index, "delta": signature}
            ))
        self._open = self._open_call = None
        stop = f'{{"type":"content_block_stop","index":{index}}}'
        return out + self._event("content_block_stop", stop)

    def _delta(self, value: str, head: str | None = None) -> bytes:
        """A ``content_block_delta`` of the open block (or of the block ``head`` begins)."""
        data = ((self._delta_head if head is None else head) + json_string(value)).encode()
        return b"%b%b%b}}\n\n" % (self.ids.next_line(), _DELTA_EVENT, data)

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
        return self._delta(event.arguments, _delta_head(index, _TOOL_USE))

    def end(self) -> bytes:
        out = self._start() + self._close()
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": self._output_tokens},
        }
        out += self._event("message_delta", dumps(delta))
        return out + self._event("message_stop", '{"type":"message_stop"}')

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        anthropic_type = {
            "server_error": "api_error",
            "upstream_error": "api_error",
            "requests": "rate_limit_error",
        }.get(error_type, error_type)
        body = {"type": "error", "error": {"type": anthropic_type, "message": message}}
        return self._event("error", dumps(body))


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
