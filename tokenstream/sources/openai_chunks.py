"""OpenAI chat-completion chunks in, reply items out: the decoding half of the upstream source.

``ChunkDecoder`` is pure: response bytes in, items out, through the WHATWG ``SSEDecoder``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tokenstream.engine.events import Passthrough
from tokenstream.errors import UpstreamStreamError
from tokenstream.sources.secrets import redact
from tokenstream.sse.parser import SSEDecoder

__all__ = ["ChunkDecoder", "UpstreamItem"]

UpstreamItem = str | Passthrough

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
    """Bytes of a streamed chat completion in, text deltas and ``Passthrough`` items out.

    A failure (an error event, a broken event, a stream cut short) does not raise: ``feed``
    and ``close`` return the items before it and set ``error``, so that the text which
    arrived before the failure is still delivered ahead of it. Nothing is read after it.

    Only choice 0 is read (proxied streams have ``n`` = 1). ``role`` is left out (the wire
    format announces the assistant itself), and so are delta fields that are null; every
    other delta field (``tool_calls``, ``refusal``, ``reasoning_content``, ...) passes through.
    """

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self._sse = SSEDecoder()
        self._secrets = secrets
        self._model: str | None = None
        self._held_surrogate = ""
        self.events = 0
        self.done = False
        """The ``[DONE]`` sentinel arrived: the reply is complete."""
        self.finished = False
        """A ``finish_reason`` arrived."""
        self.error: UpstreamStreamError | None = None
        """Why the reply failed; set at most once, and then nothing more is read."""

    def feed(self, data: bytes) -> list[UpstreamItem]:
        items: list[UpstreamItem] = []
        if self.done or self.error:
            return items
        for event in self._sse.feed(data):
            self.events += 1
            try:
                self._event(event.data, items)
            except UpstreamStreamError as exc:
                self.error = exc
            if self.done or self.error:
                break
        return items

    def close(self) -> list[UpstreamItem]:
        """The body ended. Without ``[DONE]`` or a finish reason the reply was cut short."""
        self._sse.close()
        items: list[UpstreamItem] = []
        if self.error:
            return items
        if self._held_surrogate:
            items.append(_join_surrogates(self._held_surrogate))
            self._held_surrogate = ""
        if not (self.done or self.finished):
            self.error = UpstreamStreamError(
                "The upstream closed the stream before the reply was complete.",
                code="upstream_disconnected",
            )
        return items

    def _event(self, data: str, items: list[UpstreamItem]) -> None:
        if data == "[DONE]":
            self.done = True
            if self._held_surrogate:
                items.append(_join_surrogates(self._held_surrogate))
                self._held_surrogate = ""
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
            items.append(Passthrough(model=model))
        choices = payload.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(choice, items)
        usage = payload.get("usage")
        if isinstance(usage, dict):
            items.append(Passthrough(usage=usage))

    def _choice(self, choice: dict[str, Any], items: list[UpstreamItem]) -> None:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            text = self._held_surrogate + content
            self._held_surrogate = ""
            if "\ud800" <= text[-1] <= "\udbff":  # the low half may come in the next chunk
                text, self._held_surrogate = text[:-1], text[-1]
            if text:
                items.append(_join_surrogates(text))
        rest = {
            key: value
            for key, value in delta.items()
            if key not in ("content", "role") and value is not None
        }
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            self.finished = True
        if rest or finish_reason is not None:
            if self._held_surrogate:
                items.append(_join_surrogates(self._held_surrogate))
                self._held_surrogate = ""
            items.append(
                Passthrough(
                    delta=rest or None,
                    finish_reason=None if finish_reason is None else str(finish_reason),
                )
            )
