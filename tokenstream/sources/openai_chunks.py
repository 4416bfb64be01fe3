"""OpenAI chat-completion chunks in, typed reply events out: the decoder of an upstream
(and of the terminal client's ``--dialect openai-chat``).

``ChunkDecoder`` is pure: response bytes in, ``engine.events`` out, through the WHATWG
``SSEDecoder``. ``delta.content`` is ``TextDelta``, ``delta.reasoning_content`` (vLLM,
DeepSeek) ``ReasoningDelta``, ``delta.tool_calls`` ``ToolCallStart``/``ToolCallDelta`` (and
``ToolCallEnd`` for every open call when the finish reason comes), ``finish_reason``
``Finish``, ``usage`` ``Usage`` (its object kept whole), a new ``model`` ``ModelName``; any
other non-null delta field (``refusal``, ``audio``, ...) is a ``Passthrough``.
"""

from __future__ import annotations

from typing import Any

from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReasoningDelta,
    ReplyEvent,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.errors import UpstreamStreamError
from tokenstream.sources.event_stream import (
    MAX_EVENT_CHARS,
    JsonEventDecoder,
    join_surrogates,
)
from tokenstream.sse.parser import ServerSentEvent

__all__ = ["MAX_EVENT_CHARS", "ChunkDecoder"]


class ChunkDecoder(JsonEventDecoder):
    """Bytes of a streamed chat completion in, typed reply events out
    (``event_stream.JsonEventDecoder``: failures are set as ``error``, not raised).

    ``done`` is the ``[DONE]`` sentinel; a stream that ends after a ``finish_reason``
    without it is complete too. Only choice 0 is read (proxied streams have ``n`` = 1).
    ``role`` is left out (a dialect announces the assistant itself), and so are delta fields
    that are null.
    """

    def __init__(
        self,
        secrets: tuple[str, ...] = (),
        max_event_chars: int = MAX_EVENT_CHARS,
        *,
        peer: str = "upstream",
    ) -> None:
        super().__init__(secrets, max_event_chars, peer=peer)
        self._model: str | None = None
        self._open_calls: list[int] = []

    def _event(self, event: ServerSentEvent, items: list[ReplyEvent]) -> None:
        if event.data == "[DONE]":
            self.done = True
            self._flush(items)
            return
        payload = self._json(event.data)
        if "error" in payload and payload["error"] is not None:
            raise self._stream_error(payload["error"])
        model = payload.get("model")
        if isinstance(model, str) and model and model != self._model:
            self._model = model
            items.append(ModelName(model))
        choices = payload.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(choice, items)
        usage = payload.get("usage")
        if isinstance(usage, dict):
            items.append(_usage(usage))

    def _stream_error(self, error: Any) -> UpstreamStreamError:
        """An in-stream ``{"error": ...}`` event (OpenAI or vLLM shape)."""
        if isinstance(error, dict):
            return self._failure(error.get("message"), error.get("type"), error.get("code"))
        return self._failure(error)

    def _choice(self, choice: dict[str, Any], items: list[ReplyEvent]) -> None:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._add_text(content, items)
        rest = {
            key: value
            for key, value in delta.items()
            if key not in ("content", "role") and value is not None
        }
        finish_reason = choice.get("finish_reason")
        if not rest and finish_reason is None:
            return
        self._flush(items)  # what follows text goes after all of it
        reasoning = rest.pop("reasoning_content", None)
        if isinstance(reasoning, str):
            if reasoning:
                items.append(ReasoningDelta(join_surrogates(reasoning)))
        elif reasoning is not None:
            rest["reasoning_content"] = reasoning
        calls = rest.pop("tool_calls", None)
        if calls is not None and not self._tool_calls(calls, items):
            rest["tool_calls"] = calls
        if rest:
            items.append(Passthrough(rest))
        if finish_reason is not None:
            self.finished = True
            items.extend(ToolCallEnd(index) for index in self._open_calls)
            self._open_calls.clear()
            items.append(Finish(str(finish_reason)))

    def _tool_calls(self, calls: object, items: list[ReplyEvent]) -> bool:
        """Type the ``tool_calls`` delta as OpenAI streams it; False (nothing added) for any
        other shape, which then passes through unchanged."""
        if not isinstance(calls, list) or not all(_is_call_delta(call) for call in calls):
            return False
        for call in calls:
            index = call["index"]
            function = call.get("function") or {}
            if index not in self._open_calls:
                self._open_calls.append(index)
                items.append(
                    ToolCallStart(index, call.get("id") or "", function.get("name") or "")
                )
            if function.get("arguments"):
                items.append(ToolCallDelta(index, function["arguments"]))
        return True


def _is_call_delta(call: object) -> bool:
    if not isinstance(call, dict) or not isinstance(call.get("index"), int):
        return False
    if not set(call) <= {"index", "id", "type", "function"}:
        return False
    if call.get("type") not in (None, "function"):
        return False
    function = call.get("function")
    if function is None:
        return True
    return (
        isinstance(function, dict)
        and set(function) <= {"name", "arguments"}
        and all(isinstance(value, str | None) for value in function.values())
    )


def _usage(usage: dict[str, Any]) -> Usage:
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return Usage(
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
        raw=usage,
    )
