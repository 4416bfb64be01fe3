"""OpenAI Responses: ``POST /v1/responses``, streamed and whole.

Requests: ``model``, ``input`` (a string, or a list of input items), ``instructions``,
``max_output_tokens``, ``stream``; unknown fields are refused, and those without meaning for
a scripted reply (``temperature``, ``tools``, ``reasoning``, ...) are accepted and ignored.
Input items: messages (``type`` ``message`` or left out; ``content`` a string or
``input_text``/``output_text`` parts), ``function_call_output`` (a ``tool`` message,
``tool_call_id`` its ``call_id``), and the model's own earlier ``function_call`` and
``reasoning`` items as clients send them back (accepted; they add no text).

Replies (``ResponsesFormat``): every event is ``event: <type>`` and ``data:`` with that
``type`` and a rising ``sequence_number``: ``response.created`` -> ``response.in_progress``
-> output items, each ``response.output_item.added`` ... ``response.output_item.done`` with
a rising ``output_index`` -> ``response.completed`` (all items, ``usage``), or
``response.incomplete`` (``incomplete_details.reason: "max_output_tokens"``, the item the
limit cut ``incomplete``) when ``max_output_tokens`` cut the reply. No ``[DONE]``.

- Reasoning is a ``reasoning`` item whose text is its summary, as OpenAI's reasoning models
  stream it when asked for a summary (their raw reasoning is never sent; the SDK's
  ``responses.stream()`` takes the item from its added/done events):
  ``response.reasoning_summary_part.added`` -> ``response.reasoning_summary_text.delta`` x N
  -> ``response.reasoning_summary_text.done`` -> ``response.reasoning_summary_part.done``.
- Text is a ``message`` item: ``response.content_part.added`` (``output_text``) ->
  ``response.output_text.delta`` x N -> ``response.output_text.done`` ->
  ``response.content_part.done``.
- Each tool call is a ``function_call`` item: ``response.function_call_arguments.delta`` x N
  -> ``response.function_call_arguments.done``.

One item is open at a time, as OpenAI streams them: it closes when another starts, at its
call's ``ToolCallEnd``, or at the end; reasoning or text after other content opens a new
item. An upstream that interleaves the arguments of parallel tool calls (OpenAI's do not)
has the late fragments sent on the call's own item, and ``response.completed`` carries the
whole arguments. An error after the start is an ``error`` event. A whole reply is the final
``response`` object (``response_body``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)

from tokenstream.dialects.content import ContentPart, text_of
from tokenstream.dialects.framing import dumps, json_string
from tokenstream.dialects.overrides import (
    NO_OVERRIDES,
    PacingOverrides,
    validated,
    validated_json,
)
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

__all__ = [
    "ResponsesFormat",
    "ResponsesRequest",
    "function_call_item",
    "message_item",
    "new_message_item_id",
    "new_response_id",
    "parse_responses",
    "reasoning_item",
    "response_body",
    "response_object",
]


# -- requests ------------------------------------------------------------------------------


def _as_parts(content: Any) -> Any:
    """A string is short for one text part (and errors then name the part's field, not a
    branch of a union)."""
    return [{"type": "input_text", "text": content}] if isinstance(content, str) else content


_Parts = Annotated[list[ContentPart], BeforeValidator(_as_parts)]


class _MessageItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, status
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: _Parts

    def chat_message(self) -> ChatMessage:
        return ChatMessage(self.role, text_of(self.content, ("input_text", "output_text")))


class _FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, status
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: _Parts

    def chat_message(self) -> ChatMessage:
        return ChatMessage("tool", text_of(self.output, ("input_text",)), tool_call_id=self.call_id)


class _FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, status
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class _ReasoningItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, content, encrypted_content, status
    type: Literal["reasoning"]
    summary: list[ContentPart]


def _item_type(item: Any) -> str | None:
    if isinstance(item, dict):
        kind = item.get("type", "message")  # a message may leave its type out
        return kind if isinstance(kind, str) else None
    return getattr(item, "type", None)


def _as_input_items(value: Any) -> Any:
    """A string is short for one user message."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


_InputItem = Annotated[
    Annotated[_MessageItem, Tag("message")]
    | Annotated[_FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[_FunctionCallItem, Tag("function_call")]
    | Annotated[_ReasoningItem, Tag("reasoning")],
    Discriminator(_item_type),
]


class _ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    input: Annotated[list[_InputItem], BeforeValidator(_as_input_items)]
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
    parsed = validated_json(_ResponsesBody, body)
    messages = [ChatMessage("system", parsed.instructions)] if parsed.instructions else []
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
    item: _MessageItem | _FunctionCallOutputItem | _FunctionCallItem | _ReasoningItem,
) -> None:
    """One input item as a neutral message: a function call joins the assistant message
    before it (the calls of one turn are one message), its output is a ``tool`` message;
    reasoning adds nothing."""
    if isinstance(item, _MessageItem | _FunctionCallOutputItem):
        messages.append(item.chat_message())
    elif isinstance(item, _FunctionCallItem):
        if not messages or messages[-1].role != "assistant":
            messages.append(ChatMessage("assistant", ""))
        made = messages[-1].tool_calls
        call = ToolCall(item.call_id, item.name, item.arguments, len(made))
        messages[-1] = replace(messages[-1], tool_calls=(*made, call))


class _FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


def _tool_spec(number: int, tool: dict[str, Any]) -> ToolSpec:
    """A function tool (``{"type": "function", name, description, parameters}``), or a
    built-in one (``web_search``, ``file_search``, ...) by its type."""
    kind = tool.get("type")
    if isinstance(kind, str) and kind != "function":
        return ToolSpec(kind, kind=kind)
    parsed = validated(_FunctionTool, tool, f"tools[{number}].")
    return ToolSpec(parsed.name, parsed.description, parsed.parameters or {})


# -- output items --------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{random.getrandbits(160):040x}"


def new_response_id() -> str:
    return _new_id("resp")


def new_message_item_id() -> str:
    return _new_id("msg")


def new_call_id() -> str:
    return f"call_{random.getrandbits(96):024x}"


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """The output message: in progress (``text`` None) or done with ``text``."""
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"id": item_id, "type": "message", "status": "in_progress" if text is None else status,
            "role": "assistant", "content": content}


def reasoning_item(item_id: str, summary: str | None) -> dict[str, Any]:
    """A reasoning item: in progress (``summary`` None) or done with its summary text."""
    parts = [{"type": "summary_text", "text": summary}] if summary else []
    return {"id": item_id, "type": "reasoning", "summary": parts}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
            "call_id": call_id, "name": name}


def _usage(usage: Usage) -> dict[str, Any]:
    """Usage in the Responses shape; the details an upstream gave (in chat completions'
    words) kept, else 0."""
    raw: Mapping[str, Any] = usage.raw or {}
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {
            "reasoning_tokens": completion_details.get("reasoning_tokens") or 0
        },
        "total_tokens": usage.total_tokens,
    }


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
        "usage": None if usage is None else _usage(usage),
    }


def response_body(model: str, content: ReplyContent, usage: Usage) -> dict[str, Any]:
    """A whole (not streamed) reply: the final ``response``, its items reasoning, message,
    then the function calls; cut by ``max_output_tokens``, incomplete and its last item
    too."""
    truncated = content.finish_reason == "length"
    output: list[dict[str, Any]] = []
    if content.reasoning:
        output.append(reasoning_item(_new_id("rs"), content.reasoning))
    if content.text or not content.tool_calls:
        output.append(message_item(new_message_item_id(), content.text))
    output += [
        function_call_item(_new_id("fc"), call.call_id or new_call_id(), call.name,
                           call.arguments, "completed")
        for call in content.tool_calls
    ]
    if truncated and output[-1]["type"] != "reasoning":
        output[-1]["status"] = "incomplete"
    return response_object(
        response_id=new_response_id(),
        created_at=int(time.time()),
        model=content.model or model,
        status="incomplete" if truncated else "completed",
        output=output,
        usage=usage,
        truncated=truncated,
    )


# -- the stream ----------------------------------------------------------------------------

_REASONING, _MESSAGE, _FUNCTION_CALL = "reasoning", "message", "function_call"
_DELTA_EVENTS = {
    _REASONING: "response.reasoning_summary_text.delta",
    _MESSAGE: "response.output_text.delta",
    _FUNCTION_CALL: "response.function_call_arguments.delta",
}


class _OutputItem:
    """One output item of a stream, open or done, and the text streamed into it."""

    __slots__ = ("call_id", "delta_head", "delta_lead", "delta_tail", "item_id", "kind", "name",
                 "output_index", "parts", "status")

    def __init__(
        self, kind: str, item_id: str, output_index: int, call_id: str = "", name: str = ""
    ) -> None:
        self.kind = kind
        self.item_id = item_id
        self.output_index = output_index
        self.call_id = call_id
        self.name = name
        self.parts: list[str] = []  # text, summary or arguments
        self.status = "in_progress"
        # a delta event is built around its sequence number and its value (the hot path)
        event = _DELTA_EVENTS[kind]
        self.delta_lead = f'event: {event}\ndata: {{"type":"{event}","sequence_number":'
        self.delta_head = f",{dumps(self.where())[1:-1]},\"delta\":"
        self.delta_tail = ',"logprobs":[]}\n\n' if kind == _MESSAGE else "}\n\n"

    def where(self) -> dict[str, Any]:
        """The fields that place an event of this item: ids and indexes."""
        where: dict[str, Any] = {"item_id": self.item_id, "output_index": self.output_index}
        if self.kind == _MESSAGE:
            where["content_index"] = 0
        elif self.kind == _REASONING:
            where["summary_index"] = 0
        return where

    def as_dict(self) -> dict[str, Any]:
        done = self.status != "in_progress"
        text = "".join(self.parts)
        if self.kind == _MESSAGE:
            return message_item(self.item_id, text if done else None, self.status)
        if self.kind == _REASONING:
            return reasoning_item(self.item_id, text if done else None)
        return function_call_item(
            self.item_id, self.call_id, self.name, text if done else "", self.status
        )


class ResponsesFormat:
    """One stream's events in the Responses format (``engine.events.ReplyEncoder``)."""

    __slots__ = ("_calls", "_items", "_open", "_sequence", "_started", "_truncated", "_usage",
                 "created_at", "model", "response_id")

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.response_id = new_response_id()
        self.created_at = int(time.time())
        self._sequence = 0
        self._started = False
        self._truncated = False
        self._usage: Usage | None = None
        self._items: list[_OutputItem] = []  # by output_index
        self._open: _OutputItem | None = None
        self._calls: dict[int, _OutputItem] = {}  # by ToolCallStart.index

    def _event(self, event_type: str, fields: dict[str, Any]) -> bytes:
        data = dumps({"type": event_type, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        return b"event: %b\ndata: %b\n\n" % (event_type.encode(), data.encode())

    def _delta(self, item: _OutputItem, value: str) -> bytes:
        item.parts.append(value)
        sequence = self._sequence
        self._sequence = sequence + 1
        return (
            f"{item.delta_lead}{sequence}{item.delta_head}{json_string(value)}{item.delta_tail}"
        ).encode()

    def _response(self, status: str) -> dict[str, Any]:
        output = [] if status == "in_progress" else [item.as_dict() for item in self._items]
        return response_object(
            response_id=self.response_id, created_at=self.created_at, model=self.model,
            status=status, output=output, usage=self._usage, truncated=self._truncated,
        )

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return (
            self._event("response.created", {"response": self._response("in_progress")})
            + self._event("response.in_progress", {"response": self._response("in_progress")})
        )

    def _open_item(self, kind: str, item_id: str, call_id: str = "", name: str = "") -> bytes:
        """Close the open item and start one of ``kind``."""
        out = self._start() + self._close()
        item = _OutputItem(kind, item_id, len(self._items), call_id, name)
        self._items.append(item)
        self._open = item
        out += self._event("response.output_item.added",
                           {"output_index": item.output_index, "item": item.as_dict()})
        if kind == _MESSAGE:
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self._event("response.content_part.added", {**item.where(), "part": part})
        elif kind == _REASONING:
            part = {"type": "summary_text", "text": ""}
            out += self._event("response.reasoning_summary_part.added",
                               {**item.where(), "part": part})
        return out

    def _close(self, status: str = "completed") -> bytes:
        item = self._open
        if item is None:
            return b""
        self._open = None
        item.status = status
        text = "".join(item.parts)
        where = item.where()
        if item.kind == _MESSAGE:
            part = {"type": "output_text", "text": text, "annotations": []}
            out = self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {**where, "part": part})
        elif item.kind == _REASONING:
            part = {"type": "summary_text", "text": text}
            cut = {"status": "incomplete"} if status == "incomplete" else {}
            out = self._event("response.reasoning_summary_text.done", {**where, "text": text})
            out += self._event("response.reasoning_summary_part.done",
                               {**where, "part": part, **cut})
        else:
            out = self._event("response.function_call_arguments.done",
                              {**where, "arguments": text})
        return out + self._event("response.output_item.done",
                                 {"output_index": item.output_index, "item": item.as_dict()})

    def piece(self, piece: Piece) -> bytes:
        item = self._open
        if item is not None and item.kind == _MESSAGE:
            return self._delta(item, piece.text)
        out = self._open_item(_MESSAGE, new_message_item_id())
        return out + self._delta(self._items[-1], piece.text)

    def event(self, event: ReplyEvent) -> bytes:
        if isinstance(event, ReasoningDelta):
            out = b""
            if self._open is None or self._open.kind != _REASONING:
                out = self._open_item(_REASONING, _new_id("rs"))
            return out + self._delta(self._items[-1], event.text)
        if isinstance(event, ToolCallStart):
            out = self._open_item(_FUNCTION_CALL, _new_id("fc"),
                                  event.call_id or new_call_id(), event.name)
            self._calls[event.index] = self._items[-1]
            return out
        if isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            # no item for arguments of a call never started; a closed one's late fragment is
            # still sent on its item (see the module's docstring)
            return b"" if call is None else self._delta(call, event.arguments)
        if isinstance(event, ToolCallEnd):
            call = self._calls.get(event.index)
            return self._close() if call is not None and call is self._open else b""
        if isinstance(event, TextDelta):
            return self.piece(Piece(event.text))
        if isinstance(event, Finish):
            self._truncated = event.reason == "length"
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, ModelName):
            self.model = event.name
        return b""

    def end(self) -> bytes:
        out = self._start()
        if not self._items:  # an empty reply is an empty message, as a whole reply's is
            out += self._open_item(_MESSAGE, new_message_item_id())
        out += self._close("incomplete" if self._truncated else "completed")
        if self._truncated:
            return out + self._event("response.incomplete",
                                     {"response": self._response("incomplete")})
        return out + self._event("response.completed", {"response": self._response("completed")})

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        return self._event("error", {"code": code or error_type, "message": message,
                                     "param": None})
