"""OpenAI chat-completion chunks in, typed reply events out: the upstream source's decoder.

``ChunkDecoder`` is pure: response bytes in, ``engine.events`` out, through the WHATWG
``SSEDecoder``. ``delta.content`` is ``TextDelta``, ``delta.reasoning_content`` (vLLM,
DeepSeek) ``ReasoningDelta``, ``delta.tool_calls`` ``ToolCallStart``/``ToolCallDelta`` (and
``ToolCallEnd`` for every open call when the finish reason comes), ``finish_reason``
``Finish``, ``usage`` ``Usage`` (its object kept whole), a new ``model`` ``ModelName``; any
other non-null delta field (``refusal``, ``audio``, ...) is a ``Passthrough``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.errors import UpstreamStreamError
from tokenstream.sources.secrets import redact
from tokenstream.sse.parser import EventTooLong, SSEDecoder

__all__ = ["ChunkDecoder"]

MAX_EVENT_CHARS = 1 << 20
"""The longest line or event an upstream may send (``upstream.max_event_chars``: a chunk is
far shorter; a line or an event without an end would otherwise grow without bound)."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def _join_surrogates(text: str) -> str:
    """JSON may split a character outside the BMP into two ``\\u`` escapes across chunks.

    Rejoin such pairs; a surrogate left alone is not text and becomes U+FFFD.
    """
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _stream_error(payload: Any, secrets: tuple[str, ...]) -> UpstreamStreamError:
    """An in-stream ``{"error": ...}`` event as an error for the client (OpenAI or vLLM shape)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        error_type = error.get("type")
        code = error.get("code")
    else:
        message, error_type, code = error, None, None
    return UpstreamStreamError(
        redact(str(message) if message else "The upstream reported an error.", secrets),
        error_type=str(error_type) if error_type else "upstream_error",
        code=None if code is None else str(code),
    )


class ChunkDecoder:
    """Bytes of a streamed chat completion in, typed reply events out.

    A failure (an error event, a broken event, a stream cut short) does not raise: ``feed``
    and ``close`` return the events before it and set ``error``, so that the text which
    arrived before the failure is still delivered ahead of it. Nothing is read after it.

    Only choice 0 is read (proxied streams have ``n`` = 1). ``role`` is left out (a dialect
    announces the assistant itself), and so are delta fields that are null.
    """

    def __init__(
        self, secrets: tuple[str, ...] = (), max_event_chars: int = MAX_EVENT_CHARS
    ) -> None:
        self._sse = SSEDecoder(max_event_chars)
        self._secrets = secrets
        self._model: str | None = None
        self._held_surrogate = ""
        self._open_calls: list[int] = []
        self.events = 0
        self.done = False
        """The ``[DONE]`` sentinel arrived: the reply is complete."""
        self.finished = False
        """A ``finish_reason`` arrived."""
        self.error: UpstreamStreamError | None = None
        """Why the reply failed; set at most once, and then nothing more is read."""

    def feed(self, data: bytes) -> list[ReplyEvent]:
        items: list[ReplyEvent] = []
        if self.done or self.error:
            return items
        try:
            events = self._sse.feed(data)
        except EventTooLong:
            self.error = UpstreamStreamError(
                f"The upstream sent a line or an event longer than {self._sse.max_event_chars} "
                "characters (upstream.max_event_chars).",
                code="upstream_bad_event",
            )
            return items
        for event in events:
            self.events += 1
            try:
                self._event(event.data, items)
            except UpstreamStreamError as exc:
                self.error = exc
            if self.done or self.error:
                break
        return items

    def close(self) -> list[ReplyEvent]:
        """The body ended. Without ``[DONE]`` or a finish reason the reply was cut short."""
        self._sse.close()
        items: list[ReplyEvent] = []
        if self.error:
            return items
        self._release_surrogate(items)
        if not (self.done or self.finished):
            self.error = UpstreamStreamError(
                "The upstream closed the stream before the reply was complete.",
                code="upstream_disconnected",
            )
        return items

    def _release_surrogate(self, items: list[ReplyEvent]) -> None:
        if self._held_surrogate:
            items.append(TextDelta(_join_surrogates(self._held_surrogate)))
            self._held_surrogate = ""

    def _event(self, data: str, items: list[ReplyEvent]) -> None:
        if data == "[DONE]":
            self.done = True
            self._release_surrogate(items)
            return
        try:
            payload = json.loads(data)
        except ValueError:
            raise UpstreamStreamError(
                "The upstream sent an event that is not JSON: "
                + redact(data[:120], self._secrets),
                code="upstream_bad_event",
            ) from None
        if not isinstance(payload, dict):
            raise UpstreamStreamError(
                "The upstream sent an event that is not a JSON object.", code="upstream_bad_event"
            )
        if "error" in payload and payload["error"] is not None:
            raise _stream_error(payload, self._secrets)
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

    def _choice(self, choice: dict[str, Any], items: list[ReplyEvent]) -> None:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            text = self._held_surrogate + content
            self._held_surrogate = ""
            if "\ud800" <= text[-1] <= "\udbff":  # the low half may come in the next chunk
                text, self._held_surrogate = text[:-1], text[-1]
            if text:
                items.append(TextDelta(_join_surrogates(text)))
        rest = {
            key: value
            for key, value in delta.items()
            if key not in ("content", "role") and value is not None
        }
        finish_reason = choice.get("finish_reason")
        if not rest and finish_reason is None:
            return
        self._release_surrogate(items)  # what follows text goes after all of it
        reasoning = rest.pop("reasoning_content", None)
        if isinstance(reasoning, str):
            if reasoning:
                items.append(ReasoningDelta(reasoning))
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
