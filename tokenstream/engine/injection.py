"""Faults injected into one stream, the same way for every dialect and every source.

``FaultyEncoder`` wraps the dialect's encoder and counts the reply's tokens as its events
are made (text pieces by their tokens; a reasoning or tool-call fragment as one). When a
fault's token count is reached it changes that event (``duplicate``: sent twice;
``malformed``: its JSON cut short), starts a stall (``StallGate``), or raises
``FaultReached`` for a fault that ends the stream (``error``, ``truncate``, ``reset``),
carrying the bytes of the event that reached it: the runner sends them, then ends the
stream the fault's way. A fault at a time (``@2.5s``) is the runner's timer, which acts the
same way through ``FaultyEncoder.arm``. ``InjectedFaults`` holds one stream's faults that
the runner acts on itself (at the start and at times); ``fault_ending`` is how a stream that
reached a fault ends.

``StallGate`` stands between the reply and the connection: while a stall lasts, writes wait
(the playout hands its events to the stream's task, which sleeps until the stall ends), so
the events that fell due meanwhile then arrive together, as after a real stall. A silent
stall also holds the heartbeats back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Protocol

from tokenstream.engine.accounting import AccessRecord
from tokenstream.engine.clock import Cancellable, Clock, TimerClock
from tokenstream.engine.events import (
    ReasoningDelta,
    ReplyEncoder,
    ReplyEvent,
    ToolCallDelta,
)
from tokenstream.engine.faults import Fault
from tokenstream.engine.playout import EventSink
from tokenstream.engine.registry import StreamControl
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import RequestError
from tokenstream.sse.ids import EventIds

__all__ = [
    "FaultReached",
    "FaultyEncoder",
    "InjectedFaults",
    "StallGate",
    "answer_fault",
    "fault_ending",
    "fault_error",
    "in_stream_faults",
]

_ENDING = frozenset({"error", "truncate", "reset"})

# (error type, code) of an injected error, by status; the dialect maps the type to its own
_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "not_found"),
    408: ("timeout_error", "request_timeout"),
    413: ("request_too_large", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("timeout_error", "gateway_timeout"),
    529: ("overloaded_error", "overloaded"),
}

RETRY_AFTER_S = 1
"""``Retry-After`` of an injected 429 or 529."""


def fault_error(fault: Fault) -> RequestError:
    """The error a fault of kind ``error`` answers (its status; a 429 with the headers of a
    real rate limit: ``Retry-After`` and OpenAI's ``x-ratelimit-*``)."""
    status = fault.status or 500
    error_type, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else
                                                 "invalid_request_error", f"http_{status}"))
    headers: dict[str, str] = {}
    if status in (429, 529):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if status == 429:
        headers.update({
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{RETRY_AFTER_S}s",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": f"{RETRY_AFTER_S}s",
        })
    return RequestError(
        f"Injected fault {fault}: the error a model API answers with status {status}.",
        status=status,
        error_type=error_type,
        code=code,
        headers=headers,
    )


class FaultReached(Exception):
    """A fault that ends the stream was reached; ``pending``: the bytes to send before the
    stream ends (the event that reached it)."""

    def __init__(self, fault: Fault, pending: bytes = b"") -> None:
        super().__init__(str(fault))
        self.fault = fault
        self.pending = pending


class _Connection(EventSink, Protocol):
    @property
    def last_write(self) -> float: ...


class StallGate:
    """The connection as the reply writes to it (``playout.EventSink``), held during a
    stall; ``heartbeats`` is the connection as the heartbeats write to it.

    A stall starts after the write that carries the event that reached it (that event is
    not held back), and events due together are not batched across it."""

    __slots__ = ("_clock", "_pending", "_silent", "_silent_until", "_sink", "_until",
                 "heartbeats")

    def __init__(self, sink: _Connection, clock: Clock) -> None:
        self._sink = sink
        self._clock = clock
        self._until = 0.0
        self._silent_until = 0.0
        self._pending: float | None = None  # a stall to start after the next write
        self._silent = False
        self.heartbeats = _Heartbeats(self)

    @property
    def batch_bytes(self) -> int:
        """0 while a stall waits to start or lasts: the playout writes no batch across it."""
        if self._pending is not None or self._clock.now() < self._until:
            return 0
        return self._sink.batch_bytes

    def stall(self, duration: float, *, heartbeats: bool) -> None:
        """Hold every write for ``duration`` after the next one (and the heartbeats, if not
        ``heartbeats``)."""
        self._pending = max(self._pending or 0.0, duration)
        self._silent = self._silent or not heartbeats

    def _written(self) -> None:
        if self._pending is None:
            return
        self._until = max(self._until, self._clock.now() + self._pending)
        if self._silent:
            self._silent_until = max(self._silent_until, self._until)
        self._pending, self._silent = None, False

    def write_nowait(self, data: bytes, now: float | None = None) -> bool:
        if (self._clock.now() if now is None else now) < self._until:
            return False  # the task sends it, after the stall
        written = self._sink.write_nowait(data, now)
        if written:
            self._written()
        return written

    async def send(self, data: bytes) -> None:
        await self.held()
        await self._sink.send(data)
        self._written()

    async def held(self) -> None:
        """Return once no stall holds the connection (the stream's ending waits too)."""
        if self._pending is not None:
            self._written()  # a stall asked for by the last event: it starts now
        if self._clock.now() < self._until:
            await self._clock.sleep_until(self._until)


class _Heartbeats:
    """What the heartbeats see: a silent stall counts as a write at its end, so none is due
    before it, and none is written during it."""

    __slots__ = ("_gate",)

    def __init__(self, gate: StallGate) -> None:
        self._gate = gate

    @property
    def last_write(self) -> float:
        return max(self._gate._sink.last_write, self._gate._silent_until)

    def write_nowait(self, data: bytes, now: float | None = None) -> bool:
        gate = self._gate
        if (gate._clock.now() if now is None else now) < gate._silent_until:
            return False
        return gate._sink.write_nowait(data, now)


class FaultyEncoder:
    """A dialect's encoder with faults injected at token counts (``engine.events.ReplyEncoder``)."""

    __slots__ = ("_armed", "_gate", "_inner", "_waiting", "tokens")

    def __init__(self, inner: ReplyEncoder, faults: Iterable[Fault], gate: StallGate) -> None:
        self._inner = inner
        self._gate = gate
        self._waiting = sorted(
            (fault for fault in faults if fault.when.tokens is not None),
            key=lambda fault: fault.when.tokens or 0,
        )
        self._armed: list[Fault] = []  # reached by time: acts on the next event
        self.tokens = 0

    @property
    def ids(self) -> EventIds:
        return self._inner.ids

    @ids.setter
    def ids(self, ids: EventIds) -> None:
        self._inner.ids = ids

    def arm(self, fault: Fault) -> None:
        """A fault whose time came: a stall starts now; the others act on the next event."""
        if fault.kind == "stall":
            self._gate.stall(fault.duration or 0.0, heartbeats=fault.heartbeats)
        else:
            self._armed.append(fault)

    def piece(self, piece: Piece) -> bytes:
        return self._counted(self._inner.piece(piece), piece.tokens)

    def event(self, event: ReplyEvent) -> bytes:
        data = self._inner.event(event)
        if isinstance(event, ReasoningDelta | ToolCallDelta):
            return self._counted(data, 1)
        return data

    def end(self) -> bytes:
        return self._inner.end()

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        return self._inner.error(message, error_type, code)

    def _counted(self, data: bytes, tokens: int) -> bytes:
        self.tokens += tokens
        due = self._armed
        while self._waiting and (self._waiting[0].when.tokens or 0) <= self.tokens:
            due.append(self._waiting.pop(0))
        if not due or not data:
            return data
        self._armed = []
        for fault in due:
            if fault.kind == "duplicate":
                data += data
            elif fault.kind == "malformed":
                data = malformed(data)
            elif fault.kind == "stall":
                self._gate.stall(fault.duration or 0.0, heartbeats=fault.heartbeats)
            elif fault.kind in _ENDING:
                raise FaultReached(fault, data)
        return data


def malformed(data: bytes) -> bytes:
    """``data``'s last event with its data cut off in the middle of its JSON, so that it no
    longer parses (the event's fields and blank-line ending stay)."""
    head, marker, rest = data.rpartition(b"data: ")
    if not marker:
        return data
    line, newline, tail = rest.partition(b"\n")
    return head + marker + line[: max(1, len(line) // 2)] + newline + tail


# -- injected faults -------------------------------------------------------------------------


def answer_fault(faults: Sequence[Fault]) -> Fault | None:
    """The error that answers the request itself, before the stream begins."""
    return next((f for f in faults if f.kind == "error" and f.when.at_start), None)


def in_stream_faults(faults: Sequence[Fault]) -> list[Fault]:
    """The faults the encoder acts on at their token counts (not at the start: the runner's)."""
    return [
        fault for fault in faults
        if fault.when.tokens is not None and fault.kind != "slow_headers"
        and not (fault.when.tokens == 0 and fault.kind in ("truncate", "reset", "stall"))
    ]


class InjectedFaults:
    """One stream's faults that the runner acts on itself: at the start, and at times."""

    __slots__ = ("_control", "_encoder", "_gate", "_timers", "reached")

    def __init__(self, encoder: FaultyEncoder, gate: StallGate, control: StreamControl) -> None:
        self._encoder = encoder
        self._gate = gate
        self._control = control
        self._timers: list[Cancellable] = []
        self.reached: FaultReached | None = None

    def begin(self, faults: Sequence[Fault], clock: TimerClock, started: float) -> None:
        """The stream began (its headers are out): faults at token 0 act now, faults at a
        time get a timer on the stream's clock."""
        for fault in faults:
            if fault.when.tokens == 0 and fault.kind in ("truncate", "reset"):
                raise FaultReached(fault)
            if fault.when.tokens == 0 and fault.kind == "stall":
                self._gate.stall(fault.duration or 0.0, heartbeats=fault.heartbeats)
            elif fault.when.seconds is not None and fault.kind != "slow_headers":
                self._timers.append(
                    clock.call_at(started + fault.when.seconds, partial(self._due, fault))
                )

    def _due(self, fault: Fault) -> None:
        if fault.kind in ("error", "truncate", "reset"):
            self.reached = FaultReached(fault)
            self._control.stop("fault")
        else:
            self._encoder.arm(fault)

    @property
    def tokens(self) -> int:
        """Tokens of the events made so far."""
        return self._encoder.tokens

    async def held(self) -> None:
        await self._gate.held()

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


def fault_ending(
    reached: FaultReached, encoder: ReplyEncoder, record: AccessRecord
) -> tuple[bytes, bool]:
    """How a stream ends at a fault: the event that reached it, then the dialect's error
    event (``error``) or nothing more (``truncate``: the body ends; ``reset``: the
    connection is reset, the second value)."""
    fault = reached.fault
    record.outcome = "fault"
    if fault.kind == "error":
        error = fault_error(fault)
        return reached.pending + encoder.error(error.message, error.error_type, error.code), False
    return reached.pending, fault.kind == "reset"
