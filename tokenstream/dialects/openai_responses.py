"""OpenAI Responses: ``POST /v1/responses``, streamed and whole.

Requests: ``model``, ``input`` (a string, or a list of input items: messages whose
``content`` is a string or ``input_text``/``output_text`` parts), ``instructions``,
``max_output_tokens``, ``stream``; unknown fields are refused, and those without meaning for
a scripted reply (``temperature``, ``tools``, ``reasoning``, ...) are accepted and ignored.

Replies (``ResponsesFormat``): every event is ``event: <type>`` and ``data:`` with that
``type`` and a rising ``sequence_number``: ``response.created`` -> ``response.in_progress``
-> ``response.output_item.added`` (a message) -> ``response.content_part.added``
(``output_text``) -> ``response.output_text.delta`` x N -> ``response.output_text.done`` ->
``response.content_part.done`` -> ``response.output_item.done`` -> ``response.completed``
(with ``usage``), or ``response.incomplete`` (``incomplete_details.reason:
"max_output_tokens"``) when ``max_output_tokens`` cut the reply. No ``[DONE]``. An error
after the start is an ``error`` event. A whole reply is the final ``response`` object.

Not yet carried: function calls and reasoning items.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenstream.dialects.content import ContentPart, text_of
from tokenstream.dialects.framing import dumps, json_string
from tokenstream.dialects.overrides import NO_OVERRIDES, PacingOverrides, invalid_request
from tokenstream.engine.events import Finish, ReplyEvent, Usage
from tokenstream.engine.messages import ChatMessage, RequestedToolCall, ToolSpec
from tokenstream.engine.tokenizer import Piece

__all__ = [
    "ResponsesFormat",
    "ResponsesRequest",
    "message_item",
    "new_message_item_id",
    "new_response_id",
    "parse_responses",
    "response_object",
]


class _InputItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]

    def text(self) -> str:
        return text_of(self.content, ("input_text", "output_text"))


class _FunctionCallItem(BaseModel):
    """A call the model made, given back in the conversation."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class _FunctionCallOutputItem(BaseModel):
    """A tool's result."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[ContentPart]


class _FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    input: str | list[_InputItem | _FunctionCallItem | _FunctionCallOutputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    stream: bool = False
    tokenstream: PacingOverrides | None = None

    # Accepted for compatibility, without effect on a scripted reply.
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    reasoning: Any = None
    text: Any = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    user: str | None = None
    previous_response_id: str | None = None
    truncation: str | None = None
    include: list[str] | None = None
    service_tier: str | None = None


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    model: str
    messages: list[ChatMessage]
    max_output_tokens: int | None
    stream: bool
    overrides: PacingOverrides
    tools: tuple[ToolSpec, ...] = ()


def parse_responses(body: bytes) -> ResponsesRequest:
    try:
        parsed = _ResponsesBody.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None
    messages = [ChatMessage("system", parsed.instructions)] if parsed.instructions else []
    if isinstance(parsed.input, str):
        messages.append(ChatMessage("user", parsed.input))
    else:
        for item in parsed.input:
            _add_item(messages, item)
    return ResponsesRequest(
        model=parsed.model,
        messages=messages,
        max_output_tokens=parsed.max_output_tokens,
        stream=parsed.stream,
        overrides=parsed.tokenstream or NO_OVERRIDES,
        tools=tuple(_tool_spec(number, tool) for number, tool in enumerate(parsed.tools or ())),
    )


def _add_item(
    messages: list[ChatMessage],
    item: _InputItem | _FunctionCallItem | _FunctionCallOutputItem,
) -> None:
    """One input item as a neutral message: a function call joins the assistant message
    before it (the calls of one turn are one message), its output is a ``tool`` message."""
    if isinstance(item, _InputItem):
        messages.append(ChatMessage(item.role, item.text()))
    elif isinstance(item, _FunctionCallOutputItem):
        output = text_of(item.output, ("input_text", "output_text"))
        messages.append(ChatMessage("tool", output, tool_call_id=item.call_id))
    else:
        call = RequestedToolCall(item.call_id, item.name, item.arguments)
        if messages and messages[-1].role == "assistant":
            messages[-1] = replace(messages[-1], tool_calls=(*messages[-1].tool_calls, call))
        else:
            messages.append(ChatMessage("assistant", "", tool_calls=(call,)))


def _tool_spec(number: int, tool: dict[str, Any]) -> ToolSpec:
    """A function tool (``{"type": "function", name, description, parameters}``), or a
    built-in one (``web_search``, ``file_search``, ...) by its type."""
    kind = tool.get("type")
    if isinstance(kind, str) and kind != "function":
        return ToolSpec(kind, kind=kind)
    try:
        parsed = _FunctionTool.model_validate(tool)
    except ValidationError as exc:
        raise invalid_request(exc, f"tools[{number}].") from None
    return ToolSpec(parsed.name, parsed.description, parsed.parameters or {})


def _new_id(prefix: str) -> str:
    return f"{prefix}_{random.getrandbits(160):040x}"


def new_response_id() -> str:
    return _new_id("resp")


def new_message_item_id() -> str:
    return _new_id("msg")


def response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    truncated: bool = False,
) -> dict[str, Any]:
    """The ``response`` object, as the events and a whole reply carry it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None if usage is None else {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens,
        },
    }


def message_item(item_id: str, text: str | None) -> dict[str, Any]:
    """The output message: in progress (``text`` None) or completed with ``text``."""
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    status = "in_progress" if text is None else "completed"
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}


class ResponsesFormat:
    """One stream's events in the Responses format (``engine.events.ReplyEncoder``)."""

    __slots__ = ("_delta_head", "_item_id", "_sequence", "_started", "_texts", "_truncated",
                 "_usage", "created_at", "model", "response_id")

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.response_id = new_response_id()
        self.created_at = int(time.time())
        self._item_id = new_message_item_id()
        self._sequence = 0
        self._started = False
        self._texts: list[str] = []  # the reply so far, for the closing events
        self._truncated = False
        self._usage: Usage | None = None
        self._delta_head = (
            f'"item_id":"{self._item_id}","output_index":0,"content_index":0,"delta":'
        )

    def _event(self, event_type: str, fields: dict[str, Any]) -> bytes:
        data = dumps({"type": event_type, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        return b"event: %b\ndata: %b\n\n" % (event_type.encode(), data.encode())

    def _response(self, status: str) -> dict[str, Any]:
        output = [] if status == "in_progress" else [message_item(self._item_id, self._text())]
        return response_object(
            response_id=self.response_id, created_at=self.created_at, model=self.model,
            status=status, output=output, usage=self._usage, truncated=self._truncated,
        )

    def _text(self) -> str:
        return "".join(self._texts)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": self._item_id, "output_index": 0, "content_index": 0}
        return (
            self._event("response.created", {"response": self._response("in_progress")})
            + self._event("response.in_progress", {"response": self._response("in_progress")})
            + self._event("response.output_item.added",
                          {"output_index": 0, "item": message_item(self._item_id, None)})
            + self._event("response.content_part.added", {**where, "part": part})
        )

    def piece(self, piece: Piece) -> bytes:
        out = self._start()
        self._texts.append(piece.text)
        data = (
            f'{{"type":"response.output_text.delta","sequence_number":{self._sequence},'
            f'{self._delta_head}{json_string(piece.text)},"logprobs":[]}}'
        )
        self._sequence += 1
        return out + b"event: response.output_text.delta\ndata: %b\n\n" % data.encode()

    def event(self, event: ReplyEvent) -> bytes:
        if isinstance(event, Finish):
            self._truncated = event.reason == "length"
        elif isinstance(event, Usage):
            self._usage = event
        return b""

    def end(self) -> bytes:
        out = self._start()
        text = self._text()
        where = {"item_id": self._item_id, "output_index": 0, "content_index": 0}
        out += self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
        out += self._event("response.content_part.done", {
            **where, "part": {"type": "output_text", "text": text, "annotations": []},
        })
        out += self._event("response.output_item.done",
                           {"output_index": 0, "item": message_item(self._item_id, text)})
        if self._truncated:
            return out + self._event("response.incomplete",
                                     {"response": self._response("incomplete")})
        return out + self._event("response.completed", {"response": self._response("completed")})

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        return self._event("error", {"code": code or error_type, "message": message,
                                     "param": None})
