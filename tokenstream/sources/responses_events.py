"""OpenAI Responses stream events in, typed reply events out: the decoder of an
``openai-responses`` upstream and of the terminal client (``event_stream.JsonEventDecoder``:
pure, failures set as ``error``).

=========================================== ==============================================
``response.created``                        ``ModelName``
``response.output_text.delta``              ``TextDelta``
``response.refusal.delta``                  ``Passthrough({"refusal": ...})`` (chat's field)
``response.reasoning_summary_text.delta``,  ``ReasoningDelta``
``response.reasoning_text.delta``
``response.output_item.added``              ``ToolCallStart`` (index: the order among calls)
(``function_call``)
``response.function_call_arguments.delta``  ``ToolCallDelta``
``response.output_item.done``               ``ToolCallEnd`` (with the arguments first, if
(``function_call``)                         none came as deltas)
``response.completed``                      ``Finish`` (``tool_calls`` when the reply made
                                            calls, else ``stop``), ``Usage``; done
``response.incomplete``                     ``Finish`` (``length``, or ``content_filter``),
                                            ``Usage``; done
``response.failed``, ``error``              ``UpstreamStreamError``
=========================================== ==============================================

Every other event (``response.in_progress``, the ``.done`` and ``.added`` events of text,
parts and reasoning) repeats what the deltas said, and is skipped. The usage is typed
without its object (``Usage.raw`` is for an object in chat completions' shape).
"""

from __future__ import annotations

from typing import Any

from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReasoningDelta,
    ReplyEvent,
    Usage,
)
from tokenstream.sources.event_stream import (
    MAX_EVENT_CHARS,
    JsonEventDecoder,
    ToolCallTracker,
    join_surrogates,
    str_or_empty,
)
from tokenstream.sse.parser import ServerSentEvent

__all__ = ["ResponsesEventDecoder"]

_REASONING = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


class ResponsesEventDecoder(JsonEventDecoder):
    """Bytes of a streamed Responses answer in, typed reply events out."""

    def __init__(
        self,
        secrets: tuple[str, ...] = (),
        max_event_chars: int = MAX_EVENT_CHARS,
        *,
        peer: str = "upstream",
    ) -> None:
        super().__init__(secrets, max_event_chars, peer=peer)
        self._model: str | None = None
        self._calls = ToolCallTracker()
        """The function calls begun, by output index."""

    def _event(self, event: ServerSentEvent, items: list[ReplyEvent]) -> None:
        payload = self._json(event.data)
        kind = payload.get("type", event.event)
        if kind == "response.output_text.delta":
            self._add_text(str_or_empty(payload.get("delta")), items)
            return
        self._flush(items)  # what follows text goes after all of it
        if kind in _REASONING:
            delta = join_surrogates(str_or_empty(payload.get("delta")))
            if delta:
                items.append(ReasoningDelta(delta))
        elif kind == "response.function_call_arguments.delta":
            self._arguments(payload, items)
        elif kind == "response.output_item.added":
            self._call_added(payload, items)
        elif kind == "response.output_item.done":
            self._call_done(payload, items)
        elif kind == "response.refusal.delta":
            delta = join_surrogates(str_or_empty(payload.get("delta")))
            if delta:
                items.append(Passthrough({"refusal": delta}))
        elif kind in ("response.created", "response.in_progress"):
            self._announce_model(payload.get("response"), items)
        elif kind in ("response.completed", "response.incomplete"):
            self._ending(payload.get("response"), kind == "response.incomplete", items)
        elif kind == "response.failed":
            self._failed(payload.get("response"))
        elif kind == "error":
            error = payload.get("error")
            if isinstance(error, dict):  # nested, as some servers send it
                raise self._failure(error.get("message"), error.get("type"), error.get("code"))
            raise self._failure(payload.get("message"), None, payload.get("code"))

    def _announce_model(self, response: Any, items: list[ReplyEvent]) -> None:
        model = response.get("model") if isinstance(response, dict) else None
        if isinstance(model, str) and model and model != self._model:
            self._model = model
            items.append(ModelName(model))

    def _call_added(self, payload: dict[str, Any], items: list[ReplyEvent]) -> None:
        item = payload.get("item")
        output_index = payload.get("output_index")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return
        if not isinstance(output_index, int):
            return
        call_id = item.get("call_id") or item.get("id") or ""
        index = self._calls.begin(output_index, str(call_id), str_or_empty(item.get("name")), items)
        if index is not None:
            arguments = join_surrogates(str_or_empty(item.get("arguments")))
            self._calls.arguments(index, arguments, items)

    def _call_index(self, payload: dict[str, Any]) -> int | None:
        output_index = payload.get("output_index")
        return self._calls.index_of(output_index) if isinstance(output_index, int) else None

    def _arguments(self, payload: dict[str, Any], items: list[ReplyEvent]) -> None:
        index = self._call_index(payload)
        if index is not None:
            delta = join_surrogates(str_or_empty(payload.get("delta")))
            self._calls.arguments(index, delta, items)

    def _call_done(self, payload: dict[str, Any], items: list[ReplyEvent]) -> None:
        item = payload.get("item")
        index = self._call_index(payload)
        if index is None or not self._calls.is_open(index) or not isinstance(item, dict):
            return
        # a server that sends the arguments whole, not as deltas: they go first
        self._calls.end(index, items, whole=join_surrogates(str_or_empty(item.get("arguments"))))

    def _ending(self, response: Any, incomplete: bool, items: list[ReplyEvent]) -> None:
        response = response if isinstance(response, dict) else {}
        self._announce_model(response, items)
        for index in self._calls.open_calls():
            self._calls.end(index, items)
        if incomplete:
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            finish = _INCOMPLETE_REASONS.get(str(reason), "length")
        else:
            finish = "tool_calls" if self._calls.began_any else "stop"
        items.append(Finish(finish))
        usage = response.get("usage")
        if isinstance(usage, dict):
            items.append(_usage(usage))
        self.finished = self.done = True

    def _failed(self, response: Any) -> None:
        error = response.get("error") if isinstance(response, dict) else None
        if isinstance(error, dict):
            raise self._failure(error.get("message"), "upstream_error", error.get("code"))
        raise self._failure(f"The {self._peer} reported that the response failed.")


def _usage(usage: dict[str, Any]) -> Usage:
    prompt = usage.get("input_tokens")
    completion = usage.get("output_tokens")
    return Usage(
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )
