"""What the stream decoders share: an SSE stream of JSON events in, typed reply events out.

``JsonEventDecoder`` is pure (response bytes in, ``engine.events`` out, through the WHATWG
``SSEDecoder``, which holds a UTF-8 sequence split across reads until it completes). Each
dialect's decoder (``openai_chunks``, ``responses_events``, ``anthropic_events``) says what
one event means; the failures are handled here, the same way for every dialect.

``TextJoin`` rejoins a character outside the BMP whose two ``\\u`` escapes JSON split across
events; ``ToolCallTracker`` numbers the tool calls a stream begins and ends by a key of its
own (a block's index, an output index, a call id).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from typing import Any, Protocol

from tokenstream.engine.events import (
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tokenstream.errors import UpstreamStreamError
from tokenstream.sources.secrets import redact
from tokenstream.sse.parser import EventTooLong, ServerSentEvent, SSEDecoder

__all__ = [
    "MAX_EVENT_CHARS",
    "JsonEventDecoder",
    "StreamDecoder",
    "TextJoin",
    "ToolCallTracker",
    "join_surrogates",
    "str_or_empty",
]

MAX_EVENT_CHARS = 1 << 20
"""The longest line or event an upstream may send (``upstream.max_event_chars``: an event is
far shorter; a line or an event without an end would otherwise grow without bound)."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def join_surrogates(text: str) -> str:
    """Rejoin surrogate pairs (JSON may write a character outside the BMP as two ``\\u``
    escapes); a surrogate left alone is not text and becomes U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class TextJoin:
    """One stream of text deltas: a high surrogate that ends a delta is held until the next
    one brings its low half."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        self._held = ""
        if text and "\ud800" <= text[-1] <= "\udbff":  # its low half may come next
            text, self._held = text[:-1], text[-1]
        return join_surrogates(text)

    def release(self) -> str:
        """What is held, when something else comes (it was alone after all)."""
        text, self._held = self._held, ""
        return join_surrogates(text)


def str_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


class ToolCallTracker:
    """The tool calls of one reply, numbered in the order they begin (the engine's index),
    each under the key the dialect names it by, and which of them are still open."""

    __slots__ = ("_index", "_open", "_streamed")

    def __init__(self) -> None:
        self._index: dict[Hashable, int] = {}
        self._open: list[int] = []
        self._streamed: set[int] = set()
        """Calls whose arguments came as deltas."""

    @property
    def began_any(self) -> bool:
        return bool(self._index)

    def begin(self, key: Hashable, call_id: str, name: str, items: list[ReplyEvent]) -> int | None:
        """A new call's index, its ``ToolCallStart`` added; None for a key begun before."""
        if key in self._index:
            return None
        index = self._index[key] = len(self._index)
        self._open.append(index)
        items.append(ToolCallStart(index, call_id, name))
        return index

    def index_of(self, key: Hashable) -> int | None:
        return self._index.get(key)

    def open_index_of(self, key: Hashable) -> int | None:
        index = self._index.get(key)
        return index if index in self._open else None

    def is_open(self, index: int) -> bool:
        return index in self._open

    def arguments(self, index: int, fragment: str, items: list[ReplyEvent]) -> None:
        if fragment:
            self._streamed.add(index)
            items.append(ToolCallDelta(index, fragment))

    def end(self, index: int, items: list[ReplyEvent], whole: str = "") -> None:
        """Closes an open call; ``whole``, its arguments given in one piece, goes first
        unless they came as deltas."""
        if whole and index not in self._streamed:
            items.append(ToolCallDelta(index, whole))
        self._open.remove(index)
        items.append(ToolCallEnd(index))

    def open_calls(self) -> list[int]:
        """The open calls' indexes, in the order they began (a copy: ending them is safe)."""
        return list(self._open)


class StreamDecoder(Protocol):
    """What ``upstream.reply`` reads a streamed answer with, whatever the dialect."""

    events: int
    """SSE events decoded so far."""
    done: bool
    """The reply is complete: nothing more is read."""
    error: UpstreamStreamError | None
    """Why the reply failed; set at most once, and then nothing more is read."""
    prompt_tokens: int | None
    """The prompt's tokens, when the upstream said so before the reply's first event."""

    def feed(self, data: bytes) -> list[ReplyEvent]: ...

    def close(self) -> list[ReplyEvent]: ...


class JsonEventDecoder:
    """Bytes of an event stream whose data are JSON objects in, typed reply events out.

    A failure (an error event, a broken event, a stream cut short) does not raise: ``feed``
    and ``close`` return the events before it and set ``error``, so that the text which
    arrived before the failure is still delivered ahead of it. Nothing is read after it.

    ``decode`` takes one event already parsed (the terminal client parses the SSE itself, to
    show the raw events too); ``feed`` parses bytes and decodes their events with it.
    ``peer`` names the other end in the failures' messages, types and codes: ``upstream``
    for tokenstream's upstream source, ``server`` for the terminal client.

    A subclass decodes one event (``_event``; it raises ``UpstreamStreamError`` for a
    failure), sets ``done`` at the stream's last event and ``finished`` once the reply's
    ending (its finish reason) came. Its text deltas go through ``_add_text``, and
    ``_flush`` before anything that is not text (and at the end) gives out what that held.
    """

    def __init__(
        self,
        secrets: tuple[str, ...] = (),
        max_event_chars: int = MAX_EVENT_CHARS,
        *,
        peer: str = "upstream",
    ) -> None:
        self._sse = SSEDecoder(max_event_chars)
        self._secrets = secrets
        self._peer = peer
        self.events = 0
        self.done = False
        self.finished = False
        """The reply's ending arrived: a stream that ends now is complete."""
        self.error: UpstreamStreamError | None = None
        self.prompt_tokens: int | None = None
        self._text = TextJoin()

    def feed(self, data: bytes) -> list[ReplyEvent]:
        items: list[ReplyEvent] = []
        if self.done or self.error:
            return items
        try:
            events = self._sse.feed(data)
        except EventTooLong:
            self.error = self._stream_failure(
                f"sent a line or an event longer than {self._sse.max_event_chars} "
                "characters (upstream.max_event_chars).",
                "bad_event",
            )
            return items
        for event in events:
            items += self.decode(event)
            if self.done or self.error:
                break
        return items

    def decode(self, event: ServerSentEvent) -> list[ReplyEvent]:
        """One event in, its reply events out (none once the stream is done or failed)."""
        items: list[ReplyEvent] = []
        if self.done or self.error:
            return items
        self.events += 1
        try:
            self._event(event, items)
        except UpstreamStreamError as exc:
            self.error = exc
        return items

    def close(self) -> list[ReplyEvent]:
        """The body ended. Without its last event or a finish, the reply was cut short."""
        self._sse.close()
        items: list[ReplyEvent] = []
        if self.error:
            return items
        self._flush(items)
        if not (self.done or self.finished):
            self.error = self._stream_failure(
                "closed the stream before the reply was complete.", "disconnected"
            )
        return items

    def _event(self, event: ServerSentEvent, items: list[ReplyEvent]) -> None:
        raise NotImplementedError

    def _add_text(self, delta: str, items: list[ReplyEvent]) -> None:
        text = self._text.feed(delta)
        if text:
            items.append(TextDelta(text))

    def _flush(self, items: list[ReplyEvent]) -> None:
        """What the text held back (a high surrogate alone after all) goes out."""
        held = self._text.release()
        if held:
            items.append(TextDelta(held))

    def _json(self, data: str) -> dict[str, Any]:
        try:
            payload = json.loads(data)
        except ValueError:
            raise self._stream_failure(
                "sent an event that is not JSON: " + redact(data[:120], self._secrets),
                "bad_event",
            ) from None
        if not isinstance(payload, dict):
            raise self._stream_failure("sent an event that is not a JSON object.", "bad_event")
        return payload

    def _stream_failure(self, what: str, code: str) -> UpstreamStreamError:
        """A failure of the stream itself: what the peer did wrong."""
        return UpstreamStreamError(
            f"The {self._peer} {what}",
            error_type=f"{self._peer}_error",
            code=f"{self._peer}_{code}",
        )

    def _failure(
        self, message: object, error_type: object = None, code: object = None
    ) -> UpstreamStreamError:
        """The peer's own report of a failure, as the client's error (its key redacted)."""
        message = message or f"The {self._peer} reported an error."
        return UpstreamStreamError(
            redact(str(message), self._secrets),
            error_type=str(error_type) if error_type else f"{self._peer}_error",
            code=None if code is None else str(code),
        )
