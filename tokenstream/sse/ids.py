"""A stream's event ids: the ``id:`` line each event begins with, ``<stream id>:<sequence>``.

A dialect's framing asks ``next_line()`` for every event it frames, so the numbering is
part of the one join that builds the event (no second pass over its bytes). A stream that
is not numbered frames with ``UNNUMBERED``, whose line is empty.

``EventIds.split`` goes the other way: the events of bytes framed with these ids, each with
its sequence, for a reconnect that resumes in the middle of a write.
"""

from __future__ import annotations

__all__ = ["UNNUMBERED", "EventIds", "Unnumbered"]


class EventIds:
    """Numbers one stream's events from 1."""

    __slots__ = ("_prefix", "last")

    def __init__(self, stream_id: str) -> None:
        if not stream_id or any(c in stream_id for c in "\r\n\0"):
            raise ValueError(f"a stream id must be one line without NUL, got {stream_id!r}")
        self._prefix = b"id: " + stream_id.encode() + b":"
        self.last = 0
        """The sequence of the last event framed."""

    def next_line(self) -> bytes:
        """The next event's ``id:`` line, with its line break."""
        self.last += 1
        return b"%b%d\n" % (self._prefix, self.last)

    def split(self, data: bytes) -> list[tuple[int, bytes]]:
        """The events of ``data`` (whole events framed with these ids), each with its sequence.

        What has no id of these (a duplicated event's copy, or a part cut short) goes with
        the event before it, so that the events joined are ``data`` again."""
        events: list[tuple[int, bytes]] = []
        prefix = self._prefix
        parts = data.split(b"\n\n")
        last = len(parts) - 1
        for n, part in enumerate(parts):
            if n == last and not part:
                break  # (what follows the last blank line: nothing, from an encoder)
            event = part if n == last else part + b"\n\n"
            seq = _sequence(part, prefix)
            if events and (seq is None or seq == events[-1][0]):
                events[-1] = (events[-1][0], events[-1][1] + event)
            else:
                events.append((seq or 0, event))
        return events


def _sequence(event: bytes, prefix: bytes) -> int | None:
    if not event.startswith(prefix):
        return None
    end = event.find(b"\n", len(prefix))
    digits = event[len(prefix):end if end >= 0 else len(event)]
    return int(digits) if digits.isdigit() else None


class Unnumbered(EventIds):
    """The ids of a stream that is not numbered: none."""

    __slots__ = ()

    def __init__(self) -> None:
        self._prefix = b""
        self.last = 0

    def next_line(self) -> bytes:
        return b""


UNNUMBERED = Unnumbered()
