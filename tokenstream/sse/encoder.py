"""Server-sent events encoding: one pure function from event fields to bytes.

Follows the WHATWG HTML "Server-sent events" event stream format:
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

Deliberate choices:
- ``data:`` is followed by exactly one space, which the parser strips, so text that itself
  begins with a space (most tokenizer tokens do) survives.
- A line break in ``data`` (LF, CR or CRLF) starts a new ``data:`` line; the client joins the
  lines with LF. CR and CRLF therefore arrive as LF: no SSE encoding can carry a lone CR in
  ``data``. Wire formats that must keep CR (``json``, ``openai``) escape it inside JSON.
- ``event`` and ``id`` cannot contain line breaks (and ``id`` no NUL: the client would ignore
  it); passing one is a programming error and raises ``ValueError`` rather than being
  silently rewritten.
"""

from __future__ import annotations

import re

__all__ = ["encode_comment", "encode_event"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _check_single_line(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE field {name!r} cannot contain a line break: {value!r}")


def _check_id(value: str) -> None:
    _check_single_line("id", value)
    if "\0" in value:
        raise ValueError("SSE field 'id' cannot contain NUL: the client would ignore it")


def encode_event(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one event, closed by a blank line, as UTF-8 bytes."""
    if (
        data is not None
        and retry is None
        and comment is None
        and "\n" not in data
        and "\r" not in data
    ):  # the hot path: one data line, perhaps after an event name and an id
        if event is None and id is None:
            return ("data: " + data + "\n\n").encode("utf-8")
        head = ""
        if event is not None:
            _check_single_line("event", event)
            head = "event: " + event + "\n"
        if id is not None:
            _check_id(id)
            head += "id: " + id + "\n"
        return (head + "data: " + data + "\n\n").encode("utf-8")
    lines: list[str] = []
    if comment is not None:
        lines.extend(": " + line if line else ":" for line in _LINE_BREAK.split(comment))
    if event is not None:
        _check_single_line("event", event)
        lines.append("event: " + event)
    if id is not None:
        _check_id(id)
        lines.append("id: " + id)
    if retry is not None:
        if retry < 0:
            raise ValueError(f"SSE field 'retry' must be a non-negative integer, got {retry}")
        lines.append(f"retry: {int(retry)}")
    if data is not None:
        lines.extend("data: " + line for line in _LINE_BREAK.split(data))
    if not lines:
        raise ValueError("an SSE event needs at least one field or a comment")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """A comment line; clients ignore it, proxies see traffic (used for heartbeats)."""
    return encode_event(comment=text)
