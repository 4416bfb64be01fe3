"""OpenAI Responses: ``POST /v1/responses``, streamed and whole.

Requests are parsed in ``openai_responses_request``; the output items, the ``response``
object and a whole reply's body are built in ``openai_responses_items``. Their public names
are importable from here too.

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

import time
from typing import Any

from tokenstream.dialects.framing import dumps, json_string
from tokenstream.dialects.openai_responses_items import (
    function_call_item,
    message_item,
    new_call_id,
    new_item_id,
    new_message_item_id,
    new_response_id,
    reasoning_item,
    response_body,
    response_object,
)
from tokenstream.dialects.openai_responses_request import ResponsesRequest, parse_responses
from tokenstream.engine.events import (
    Finish,
    ModelName,
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.tokenizer import Piece
from tokenstream.sse.ids import UNNUMBERED, EventIds

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
                 "created_at", "ids", "model", "response_id")

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
        self.ids: EventIds = UNNUMBERED

    def _event(self, event_type: str, fields: dict[str, Any]) -> bytes:
        data = dumps({"type": event_type, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        return b"%bevent: %b\ndata: %b\n\n" % (
            self.ids.next_line(), event_type.encode(), data.encode()
        )

    def _delta(self, item: _OutputItem, value: str) -> bytes:
        item.parts.append(value)
        sequence = self._sequence
        self._sequence = sequence + 1
        return self.ids.next_line() + (
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
                out = self._open_item(_REASONING, new_item_id("rs"))
            return out + self._delta(self._items[-1], event.text)
        if isinstance(event, ToolCallStart):
            out = self._open_item(_FUNCTION_CALL, new_item_id("fc"),
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
