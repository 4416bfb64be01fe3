"""What the SSE dialects share: the event name and the sentinel.

An error after the stream started is sent as ``data: {"error": {...}}`` (the OpenAI shape),
then the sentinel. Every event begins with the line ``ids`` gives it (``sse.ids``: the
runner numbers a stream's events; an encoder made on its own is unnumbered).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from tokenstream.engine.events import ReplyEvent
from tokenstream.errors import error_body
from tokenstream.sse.encoder import encode_event
from tokenstream.sse.ids import UNNUMBERED, EventIds

__all__ = ["EventFraming", "dumps", "json_string"]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


json_string: Callable[[str], str] = encode_basestring
"""What ``dumps`` makes of a str, without building a JSONEncoder per call (10x faster)."""


class EventFraming:
    """Event name and the sentinel, for one stream."""

    # slots throughout: one encoder lives as long as its stream
    __slots__ = ("_event_line", "event_name", "events_sent", "ids", "sentinel")

    def __init__(self, *, event: str | None, sentinel: str) -> None:
        self.event_name = event
        self.sentinel = sentinel
        self.events_sent = 0
        self.ids: EventIds = UNNUMBERED
        # checked by the encoder once, here; ``frame_json`` reuses it for every event
        self._event_line = encode_event(event=event)[:-1] if event is not None else b""

    def frame(self, data: str) -> bytes:
        self.events_sent += 1
        return self.ids.next_line() + encode_event(data, event=self.event_name)

    def frame_json(self, head: bytes, value: str, tail: bytes) -> bytes:
        """``frame(head + value + tail)`` for JSON data, whose text is one line (JSON escapes
        line breaks), so it is framed without looking for any: the hot path of ``openai``."""
        self.events_sent += 1
        return b"".join((
            self.ids.next_line(), self._event_line, b"data: ", head, value.encode(), tail,
            b"\n\n",
        ))

    def event(self, event: ReplyEvent) -> bytes:
        """Text-only formats leave out every event but text (which comes as pieces)."""
        return b""

    def end(self) -> bytes:
        return self.ids.next_line() + encode_event(self.sentinel, event=self.event_name)

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        return self.frame(dumps(error_body(message, error_type, None, code))) + self.end()
