"""The Vercel AI SDK's UI message stream: ``POST /api/chat`` (``server.ai_sdk_chat_path``),
what ``useChat`` and its ``DefaultChatTransport`` speak.

Requests: the body the transport sends, ``{id, messages, trigger, messageId}`` plus whatever
fields the app adds. ``messages`` are UI messages (``id``, ``role``, ``parts``): the text of
their ``text`` parts is the message's text; an assistant message becomes one assistant turn
per step (``step-start`` parts divide them, as the SDK's ``convertToModelMessages`` does),
each followed by a ``tool`` message for every tool part (``tool-<name>``, ``dynamic-tool``)
with a result: its ``output`` (a string as is, anything else as JSON), ``errorText``, or the
denial of an approval. Reasoning, files, sources and data parts are ignored. A
``tokenstream`` object carries pacing overrides as in the other dialects.

Replies (``UIMessageStreamFormat``): always streamed (the protocol has no whole answer, so
there is no ``stream`` flag), with ``x-vercel-ai-ui-message-stream: v1``; every part is
``data: {json}``: ``start`` (``messageId``) -> ``start-step`` -> ``text-start`` ->
``text-delta`` x N -> ``text-end`` -> ``finish-step`` -> ``finish`` -> ``data: [DONE]``.
Reasoning is ``reasoning-start``/``-delta``/``-end``; a tool call is ``tool-input-start``,
``tool-input-delta`` x N and ``tool-input-available`` with the parsed ``input``
(``tool-input-error`` when its arguments are not JSON). Text, reasoning and tool calls may
come in any order: each switch between text and reasoning, and each tool call, starts a new
part, so the message's parts keep the reply's order. ``finish`` carries ``finishReason`` in
the SDK's words and the usage as ``messageMetadata.totalUsage`` (a ``LanguageModelUsage``),
the pattern of the SDK's own documentation. A failure is an ``error`` part, then ``[DONE]``.

Errors before the stream are plain text with the error's status: the SDK's transport shows
a failed response's body, as it is, as the error's message.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenstream.dialects.framing import dumps, json_string
from tokenstream.dialects.overrides import (
    NO_OVERRIDES,
    PacingOverrides,
    validated_json,
)
from tokenstream.engine.events import (
    Finish,
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.tokenizer import Piece
from tokenstream.sse.ids import UNNUMBERED, EventIds

__all__ = [
    "FINISH_REASONS",
    "UI_MESSAGE_STREAM_HEADERS",
    "UIChatRequest",
    "UIMessageStreamFormat",
    "new_message_id",
    "parse_ui_chat",
]

UI_MESSAGE_STREAM_HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
"""What marks a response as a UI message stream (besides the SSE headers)."""

FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "content_filter": "content-filter",
}
"""The engine's finish reasons (OpenAI's words) in the SDK's; any other is ``other`` (the
SDK's schema allows no value outside its list)."""

_DENIED = "Tool call execution denied."
"""What the SDK tells the model when a tool call's approval was refused without a reason."""


# -- requests ------------------------------------------------------------------------------


class _Part(BaseModel):
    """One part of a UI message; only the fields read here are typed."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(min_length=1)
    text: str | None = None
    tool_call_id: str | None = Field(default=None, alias="toolCallId")
    state: str | None = None
    output: Any = None
    error_text: str | None = Field(default=None, alias="errorText")
    provider_executed: bool | None = Field(default=None, alias="providerExecuted")
    approval: dict[str, Any] | None = None

    @property
    def is_tool(self) -> bool:
        return self.type.startswith("tool-") or self.type == "dynamic-tool"

    @model_validator(mode="after")
    def _has_what_its_type_needs(self) -> Self:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text' (a string)")
        if self.is_tool and (self.tool_call_id is None or self.state is None):
            raise ValueError(f"a {self.type} part needs 'toolCallId' and 'state' (strings)")
        if self.is_tool and self.state == "output-error" and self.error_text is None:
            raise ValueError("a tool part in state output-error needs 'errorText' (a string)")
        return self

    def tool_result(self) -> str | None:
        """What the tool returned, as the text of a ``tool`` message; None without a result
        (or for a tool the provider ran, whose result the model already has)."""
        if not self.is_tool or self.provider_executed:
            return None
        if self.state == "output-available":
            return self.output if isinstance(self.output, str) else dumps(self.output)
        if self.state == "output-error":
            return self.error_text
        if self.state == "output-denied":
            reason = (self.approval or {}).get("reason")
            return reason if isinstance(reason, str) else _DENIED
        return None


class _UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    id: str | None = None
    role: Literal["system", "user", "assistant"]
    parts: list[_Part] = Field(max_length=10_000)


class _ChatBody(BaseModel):
    # The SDK's transports merge the app's own fields into the body (``useChat({body})``,
    # ``sendMessage(message, {body})``), so a field not known here is the app's: ignored,
    # not refused. The fields read here are validated.
    model_config = ConfigDict(extra="ignore", strict=True)

    id: str | None = None
    messages: list[_UIMessage] = Field(min_length=1, max_length=10_000)
    trigger: Literal["submit-message", "regenerate-message"] | None = None
    message_id: str | None = Field(default=None, alias="messageId")
    model: str | None = Field(default=None, min_length=1, max_length=256)
    """Not the protocol's, but what apps commonly add (``useChat({body: {model}})``): the
    model asked of an upstream; unset, the first of ``models``."""
    tokenstream: PacingOverrides | None = None


@dataclass(frozen=True, slots=True)
class UIChatRequest:
    messages: list[ChatMessage]
    message_id: str
    """The reply's message id: the last message's when that is the assistant's (the reply
    continues it, after tool results), else a new one."""
    overrides: PacingOverrides
    model: str | None = None
    chat_id: str | None = None
    """The body's ``id``: the chat, whose active stream ``GET /api/chat/{id}/stream``
    resumes."""


def parse_ui_chat(body: bytes) -> UIChatRequest:
    parsed = validated_json(_ChatBody, body)
    messages: list[ChatMessage] = []
    for message in parsed.messages:
        if message.role == "assistant":
            messages += _assistant_turns(message.parts)
        else:
            messages.append(ChatMessage(message.role, _text_of(message.parts)))
    last = parsed.messages[-1]
    continued = last.id if last.role == "assistant" and last.id else None
    return UIChatRequest(
        messages=messages,
        message_id=continued or new_message_id(),
        overrides=parsed.tokenstream or NO_OVERRIDES,
        model=parsed.model,
        chat_id=parsed.id,
    )


def _assistant_turns(parts: list[_Part]) -> list[ChatMessage]:
    """An assistant message's steps: each its text, then the results of its tool calls."""
    turns: list[ChatMessage] = []
    for step in _steps(parts):
        if any(part.type == "text" or part.is_tool for part in step):
            turns.append(ChatMessage("assistant", _text_of(step)))
            turns += [
                ChatMessage("tool", result, tool_call_id=part.tool_call_id)
                for part in step
                if (result := part.tool_result()) is not None
            ]
    return turns


def _steps(parts: list[_Part]) -> list[list[_Part]]:
    """Parts divided into steps where a ``step-start`` part begins one."""
    steps: list[list[_Part]] = [[]]
    for part in parts:
        if part.type == "step-start":
            steps.append([])
        else:
            steps[-1].append(part)
    return steps


def _text_of(parts: list[_Part]) -> str:
    return "".join(part.text or "" for part in parts if part.type == "text")


def new_message_id() -> str:
    return f"msg-{random.getrandbits(96):024x}"


# -- replies -------------------------------------------------------------------------------


def _arguments(text: str) -> Any:
    """A tool call's JSON arguments, parsed (empty: ``{}``, as the SDK takes them); raises
    ValueError for what is not JSON (``NaN`` and ``Infinity`` included)."""
    if not text.strip():
        return {}
    return json.loads(text, parse_constant=_not_json)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


@dataclass(slots=True)
class _ToolCall:
    call_id: str
    name: str
    arguments: list[str]


class UIMessageStreamFormat:
    """One stream's parts in the UI message stream protocol (``engine.events.ReplyEncoder``)."""

    __slots__ = ("_finish_reason", "_parts_opened", "_reasoning_id", "_started", "_text_head",
                 "_text_id", "_tool_calls", "_usage", "ids", "message_id")

    def __init__(self, *, message_id: str) -> None:
        self.message_id = message_id
        self._started = False
        self._parts_opened = 0  # numbers the text and reasoning parts' ids
        self._text_id: str | None = None
        self._text_head = b""  # the open text part's text-delta JSON up to the delta's value
        self._reasoning_id: str | None = None
        self._tool_calls: dict[int, _ToolCall] = {}  # open calls by ToolCallStart.index
        self._finish_reason = "stop"
        self._usage: Usage | None = None
        self.ids: EventIds = UNNUMBERED

    def _event(self, data: bytes) -> bytes:
        return b"%bdata: %b\n\n" % (self.ids.next_line(), data)

    def _part(self, fields: dict[str, Any]) -> bytes:
        return self._event(dumps(fields).encode())

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._part({"type": "start", "messageId": self.message_id}) + self._event(
            b'{"type":"start-step"}'
        )

    def _new_id(self, kind: str) -> str:
        self._parts_opened += 1
        return f"{kind}-{self._parts_opened}"

    def _text(self, text: str) -> bytes:
        out = b""
        if self._text_id is None:
            out = self._start() + self._close_reasoning()
            self._text_id = self._new_id("text")
            out += self._part({"type": "text-start", "id": self._text_id})
            self._text_head = b'{"type":"text-delta","id":%b,"delta":' % (
                json_string(self._text_id).encode()
            )
        return out + self._text_delta(text)

    def _text_delta(self, text: str) -> bytes:
        return b"%bdata: %b%b}\n\n" % (
            self.ids.next_line(), self._text_head, json_string(text).encode()
        )

    def _reasoning(self, text: str) -> bytes:
        out = b""
        if self._reasoning_id is None:
            out = self._start() + self._close_text()
            self._reasoning_id = self._new_id("reasoning")
            out += self._part({"type": "reasoning-start", "id": self._reasoning_id})
        return out + self._part(
            {"type": "reasoning-delta", "id": self._reasoning_id, "delta": text}
        )

    def _close_text(self) -> bytes:
        if self._text_id is None:
            return b""
        out = self._part({"type": "text-end", "id": self._text_id})
        self._text_id = None
        return out

    def _close_reasoning(self) -> bytes:
        if self._reasoning_id is None:
            return b""
        out = self._part({"type": "reasoning-end", "id": self._reasoning_id})
        self._reasoning_id = None
        return out

    def _start_tool_call(self, event: ToolCallStart) -> bytes:
        out = self._start() + self._close_text() + self._close_reasoning()
        out += self._end_tool_call(event.index)  # a source that reused an open call's index
        self._tool_calls[event.index] = _ToolCall(event.call_id, event.name, [])
        return out + self._part(
            {"type": "tool-input-start", "toolCallId": event.call_id, "toolName": event.name}
        )

    def _end_tool_call(self, index: int) -> bytes:
        call = self._tool_calls.pop(index, None)
        if call is None:
            return b""
        text = "".join(call.arguments)
        try:
            arguments = _arguments(text)
        except ValueError as exc:
            return self._part({
                "type": "tool-input-error", "toolCallId": call.call_id, "toolName": call.name,
                "input": text, "errorText": f"The tool call's arguments are not JSON: {exc}",
            })
        return self._part({"type": "tool-input-available", "toolCallId": call.call_id,
                      "toolName": call.name, "input": arguments})

    def _close_all(self) -> bytes:
        out = self._close_text() + self._close_reasoning()
        for index in list(self._tool_calls):
            out += self._end_tool_call(index)
        return out

    def piece(self, piece: Piece) -> bytes:
        if self._text_id is None:
            return self._text(piece.text)  # the first piece of a text part opens it
        return self._text_delta(piece.text)

    def event(self, event: ReplyEvent) -> bytes:
        if isinstance(event, ReasoningDelta):
            return self._reasoning(event.text) if event.text else b""
        if isinstance(event, TextDelta):
            return self._text(event.text) if event.text else b""
        if isinstance(event, ToolCallStart):
            return self._start_tool_call(event)
        if isinstance(event, ToolCallDelta):
            call = self._tool_calls.get(event.index)
            if call is None or not event.arguments:
                return b""  # no call of that index is open: there is nothing to add it to
            call.arguments.append(event.arguments)
            return self._part({"type": "tool-input-delta", "toolCallId": call.call_id,
                          "inputTextDelta": event.arguments})
        if isinstance(event, ToolCallEnd):
            return self._end_tool_call(event.index)
        if isinstance(event, Finish):
            self._finish_reason = FINISH_REASONS.get(event.reason, "other")
            return self._close_all()
        if isinstance(event, Usage):
            self._usage = event
        return b""  # ModelName, Passthrough: the protocol has no place for them

    def end(self) -> bytes:
        out = self._start() + self._close_all() + self._event(b'{"type":"finish-step"}')
        finish: dict[str, Any] = {"type": "finish", "finishReason": self._finish_reason}
        if self._usage is not None:
            finish["messageMetadata"] = {"totalUsage": _total_usage(self._usage)}
        return out + self._part(finish) + self._event(b"[DONE]")

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        return self._part({"type": "error", "errorText": message}) + self._event(b"[DONE]")


def _total_usage(usage: Usage) -> dict[str, Any]:
    """``usage`` as the SDK's ``LanguageModelUsage``; the details it has no count for are
    left out (undefined), their objects kept so that reading one is not an error."""
    return {
        "inputTokens": usage.prompt_tokens,
        "inputTokenDetails": {},
        "outputTokens": usage.completion_tokens,
        "outputTokenDetails": {},
        "totalTokens": usage.total_tokens,
    }
