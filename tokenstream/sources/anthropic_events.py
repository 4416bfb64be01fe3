"""Anthropic Messages stream events in, typed reply events out: the decoder of an
``anthropic`` upstream and of the terminal client (``event_stream.JsonEventDecoder``: pure,
failures set as ``error``).

================================================ =========================================
``message_start``                                ``ModelName``; the prompt's tokens kept
                                                 (``prompt_tokens``)
``content_block_start`` ``tool_use``             ``ToolCallStart`` (index: the order among
                                                 calls)
``content_block_delta`` ``text_delta``           ``TextDelta``
``content_block_delta`` ``thinking_delta``       ``ReasoningDelta``
``content_block_delta`` ``input_json_delta``     ``ToolCallDelta``
``content_block_stop`` of a ``tool_use``         ``ToolCallEnd``
``message_delta``                                ``Finish`` (``stop_reason`` in OpenAI's
                                                 words), ``Usage``
``message_stop``                                 done
``error``                                        ``UpstreamStreamError`` (its type, message)
================================================ =========================================

``ping``, ``signature_delta``, ``citations_delta`` and the blocks of server tools are
skipped. The prompt's tokens are Anthropic's ``input_tokens`` with the cache's
(``cache_creation_input_tokens``, ``cache_read_input_tokens``), as OpenAI counts them.
"""

from __future__ import annotations

import json
from typing import Any

from tokenstream.engine.events import (
    Finish,
    ModelName,
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

__all__ = ["FINISH_REASONS", "AnthropicEventDecoder"]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic's ``stop_reason`` in the engine's (OpenAI's) words; another passes unchanged."""

_PROMPT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class AnthropicEventDecoder(JsonEventDecoder):
    """Bytes of a streamed Anthropic message in, typed reply events out."""

    def __init__(
        self,
        secrets: tuple[str, ...] = (),
        max_event_chars: int = MAX_EVENT_CHARS,
        *,
        peer: str = "upstream",
    ) -> None:
        super().__init__(secrets, max_event_chars, peer=peer)
        self._calls = ToolCallTracker()
        """The tool_use blocks begun, by block index."""
        self._start_input: dict[int, str] = {}
        """A tool_use block's ``input`` given whole at its start (not ``{}``)."""

    def _event(self, event: ServerSentEvent, items: list[ReplyEvent]) -> None:
        payload = self._json(event.data)
        kind = payload.get("type", event.event)
        if kind == "content_block_delta":
            self._delta(payload, items)
            return
        self._flush(items)  # what follows text goes after all of it
        if kind == "content_block_start":
            self._block_start(payload, items)
        elif kind == "content_block_stop":
            self._block_stop(payload, items)
        elif kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                model = message.get("model")
                if isinstance(model, str) and model:
                    items.append(ModelName(model))
                self._prompt(message.get("usage"))
        elif kind == "message_delta":
            self._message_delta(payload, items)
        elif kind == "message_stop":
            self._close_calls(items)
            self.done = True
        elif kind == "error":
            error = payload.get("error")
            error = error if isinstance(error, dict) else {}
            raise self._failure(error.get("message"), error.get("type"))

    def _prompt(self, usage: Any) -> None:
        if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
            return
        self.prompt_tokens = sum(
            value for name in _PROMPT_FIELDS if isinstance(value := usage.get(name), int)
        )

    def _delta(self, payload: dict[str, Any], items: list[ReplyEvent]) -> None:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            self._add_text(str_or_empty(delta.get("text")), items)
            return
        self._flush(items)
        if kind == "thinking_delta":
            thinking = join_surrogates(str_or_empty(delta.get("thinking")))
            if thinking:
                items.append(ReasoningDelta(thinking))
        elif kind == "input_json_delta":
            index = self._open_call(payload)
            if index is not None:
                fragment = join_surrogates(str_or_empty(delta.get("partial_json")))
                self._calls.arguments(index, fragment, items)

    def _block_start(self, payload: dict[str, Any], items: list[ReplyEvent]) -> None:
        block = payload.get("content_block")
        position = payload.get("index")
        if not isinstance(block, dict) or block.get("type") != "tool_use":
            return
        if not isinstance(position, int):
            return
        index = self._calls.begin(
            position, str_or_empty(block.get("id")), str_or_empty(block.get("name")), items
        )
        given = block.get("input")
        if index is not None and isinstance(given, dict) and given:  # streamed: it starts {}
            self._start_input[index] = json.dumps(given, ensure_ascii=False)

    def _open_call(self, payload: dict[str, Any]) -> int | None:
        position = payload.get("index")
        return self._calls.open_index_of(position) if isinstance(position, int) else None

    def _block_stop(self, payload: dict[str, Any], items: list[ReplyEvent]) -> None:
        index = self._open_call(payload)
        if index is not None:
            self._end_call(index, items)

    def _end_call(self, index: int, items: list[ReplyEvent]) -> None:
        self._calls.end(index, items, whole=self._start_input.pop(index, ""))

    def _close_calls(self, items: list[ReplyEvent]) -> None:
        for index in self._calls.open_calls():
            self._end_call(index, items)

    def _message_delta(self, payload: dict[str, Any], items: list[ReplyEvent]) -> None:
        self._close_calls(items)
        delta = payload.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if isinstance(reason, str):
            items.append(Finish(FINISH_REASONS.get(reason, reason)))
            self.finished = True
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self._prompt(usage)  # cumulative: it may count more than message_start did
            output = usage.get("output_tokens")
            items.append(
                Usage(self.prompt_tokens or 0, output if isinstance(output, int) else 0)
            )
