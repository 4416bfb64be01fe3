"""What streams did: the counters of the whole server, and the record of one request.

``StreamStats`` is read by ``GET /healthz`` and ``/metrics``. An ``AccessRecord`` is what
the access log writes when its request ends; the runner fills in what only it knows (the
tokens sent, how the stream ended) through ``current_record()``, a context variable that
the access log middleware binds for the request's task with ``bind_record()``.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AccessRecord",
    "Outcome",
    "StreamStats",
    "bind_record",
    "current_record",
    "unbind_record",
]

Outcome = Literal[
    "", "completed", "disconnected", "stalled", "shutdown", "time_limit", "failed", "fault"
]
"""How a stream ended; a request that streamed nothing is logged as ``ok`` or ``error``."""


@dataclass(slots=True)
class StreamStats:
    active: int = 0
    started: int = 0
    completed: int = 0
    disconnected: int = 0
    failed: int = 0
    events_sent: int = 0
    stalled: int = 0  # disconnected by send_timeout_s (counted in disconnected too)
    store_errors: int = 0  # operations on the shared store (Redis) that failed


@dataclass(slots=True)
class AccessRecord:
    stream: bool = False
    status: int | None = None
    """Set by the runner once a stream's headers are sent."""
    tokens: int = 0
    """Completion tokens written to the client."""
    outcome: Outcome = ""
    fault: str = ""
    """The injected fault that ended or changed the stream (its spec), if any."""
    peak_buffered: int = 0
    """Largest output queue of the stream, in bytes (logged when a client stalled)."""

    @property
    def disconnected(self) -> bool:
        return self.outcome in ("disconnected", "stalled")


_CURRENT: ContextVar[AccessRecord | None] = ContextVar("tokenstream_access", default=None)


def current_record() -> AccessRecord:
    """The record of the request being handled (a detached one outside a request)."""
    record = _CURRENT.get()
    return record if record is not None else AccessRecord()


def bind_record() -> tuple[AccessRecord, Token[AccessRecord | None]]:
    """A new record for the request being handled; ``unbind_record(token)`` when it ends.

    (Two functions rather than a context manager: nothing but the token stays alive with the
    request, which for a stream is as long as the stream.)
    """
    record = AccessRecord()
    return record, _CURRENT.set(record)


def unbind_record(token: Token[AccessRecord | None]) -> None:
    _CURRENT.reset(token)
