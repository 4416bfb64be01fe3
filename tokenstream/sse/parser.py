"""An incremental server-sent events parser: bytes in, events out, no I/O.

Implements the WHATWG "event stream interpretation" rules:
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

- The stream is UTF-8; invalid bytes decode to U+FFFD as the spec requires. A byte sequence
  split across ``feed`` calls is held until it completes.
- One leading U+FEFF (BOM) is skipped.
- Lines end in CRLF, LF or CR. A CR at the end of a chunk ends the line at once; an LF that
  starts the next chunk is then swallowed as the second half of the CRLF pair.
- An event still being collected when the stream ends is discarded (spec: "any pending data
  must be discarded").

A line is collected in parts, so a long one costs time in proportion to its length. With
``max_event_chars``, a line or an event's data (its ``data:`` lines together) longer than
that raises ``EventTooLong`` (the spec sets no limit; a client of an untrusted server needs
one).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["EventTooLong", "SSEDecoder", "ServerSentEvent"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """A dispatched event, as an EventSource would hand it to a listener."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class EventTooLong(ValueError):
    """A line or an event went past the decoder's ``max_event_chars``."""


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the events they complete."""

    def __init__(self, max_event_chars: int | None = None) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self.max_event_chars = max_event_chars
        self._partial: list[str] = []  # the parts of a line not yet ended
        self._partial_chars = 0
        self._skip_lf = False
        self._data: list[str] = []
        self._data_chars = 0
        self._event_type = ""
        self._last_event_id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        return self._feed_text(self._utf8.decode(chunk))

    def close(self) -> list[ServerSentEvent]:
        """End of stream: flush the decoder; an unterminated line or event is dropped."""
        events = self._feed_text(self._utf8.decode(b"", final=True))
        self._partial.clear()
        self._partial_chars = 0
        self._data.clear()
        self._data_chars = 0
        self._event_type = ""
        return events

    def _feed_text(self, text: str) -> list[ServerSentEvent]:
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        events: list[ServerSentEvent] = []
        start = 0
        length = len(text)
        while start < length:
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                self._hold(text[start:])
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, next_start = lf, lf + 1
            else:
                end, next_start = cr, cr + 1
                if next_start < length:
                    if text[next_start] == "\n":
                        next_start += 1
                else:
                    self._skip_lf = True
            line = text[start:end]
            if self._partial:
                self._hold(line)
                line = "".join(self._partial)
                self._partial.clear()
                self._partial_chars = 0
            event = self._process_line(line)
            if event is not None:
                events.append(event)
            start = next_start
        return events

    def _hold(self, part: str) -> None:
        self._partial_chars += len(part)
        if self.max_event_chars is not None and self._partial_chars > self.max_event_chars:
            raise EventTooLong(f"a line longer than {self.max_event_chars} characters")
        self._partial.append(part)

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data_chars += len(value) + 1
            if self.max_event_chars is not None and self._data_chars > self.max_event_chars:
                raise EventTooLong(f"an event longer than {self.max_event_chars} characters")
            self._data.append(value)
        elif field == "event":
            self._event_type = value
        elif field == "id":
            if "\0" not in value:
                self._last_event_id = value
        elif field == "retry" and value and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event_type = self._data, self._event_type
        self._data, self._event_type, self._data_chars = [], "", 0
        if not data:
            return None
        return ServerSentEvent(
            data="\n".join(data),
            event=event_type or "message",
            id=self._last_event_id,
            retry=self._retry,
        )
