"""The watch of one reply: heartbeats through silences, and the stream's time limit, on one
timer of the reply's clock (``runner.Runner`` arms one per stream)."""

from __future__ import annotations

from typing import Protocol

from tokenstream.engine.clock import Cancellable, TimerClock
from tokenstream.engine.registry import StreamControl
from tokenstream.sse.transport import PING, ClientGone

__all__ = ["HeartbeatSink", "StreamWatch"]


class HeartbeatSink(Protocol):
    """Where a heartbeat goes: the connection, or a gate or feed in front of it."""

    @property
    def last_write(self) -> float: ...

    def write_nowait(self, data: bytes, now: float | None = None) -> bool: ...


class StreamWatch:
    """Heartbeats and the time limit of one reply, on one timer of its ``Reply.watch_clock``.

    After ``heartbeat`` seconds without a write, a ping comment goes out (only if it can be
    written at once: output still queued means the connection is not silent). At ``limit``
    (absolute) the stream's control is stopped with the reason ``time_limit``, which cancels
    whatever the stream waits for: a pacing deadline, an upstream that sends nothing, or
    one that sends only what is not text.
    """

    __slots__ = ("_clock", "_control", "_heartbeat", "_limit", "_sink", "_timer")

    def __init__(
        self,
        clock: TimerClock,
        control: StreamControl,
        *,
        sink: HeartbeatSink | None = None,
        heartbeat: float | None = None,
        limit: float | None = None,
    ) -> None:
        self._clock = clock
        self._control = control
        self._sink = sink
        self._heartbeat = heartbeat if sink is not None else None
        self._limit = limit
        self._timer: Cancellable | None = None
        self._arm()

    def _arm(self) -> None:
        due = self._limit
        if self._sink is not None and self._heartbeat is not None:
            ping_at = self._sink.last_write + self._heartbeat
            if due is None or ping_at < due:
                due = ping_at
        if due is not None:
            self._timer = self._clock.call_at(due, self._on_due)

    def _on_due(self) -> None:
        self._timer = None
        now = self._clock.now()
        if self._limit is not None and now >= self._limit:
            self._control.stop("time_limit")
            return
        sink, heartbeat = self._sink, self._heartbeat
        if sink is not None and heartbeat is not None and now >= sink.last_write + heartbeat:
            try:
                sink.write_nowait(PING, now)
            except ClientGone:
                return  # the stream's own write or wait ends it
        self._arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
