"""What the engine measures while it paces: lateness per event and counters per stream.

Pacing lateness is the time an event was actually written minus its deadline: what the
server adds to the schedule before the bytes reach the socket (the network and the client
add more, which ``scripts/bench.py`` measures at the client).

The hot path only increments plain integers and one histogram bucket;
``tokenstream.server.metrics`` reads them when ``GET /metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from tokenstream.engine.clock import Clock

__all__ = ["LATENESS_BUCKETS", "DeadlineRecorder", "LatenessHistogram", "StreamCounters"]

LATENESS_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
)


class LatenessHistogram:
    """A fixed-bucket histogram of seconds; ``observe`` is one bisect and two additions."""

    def __init__(self, bounds: Sequence[float] = LATENESS_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of observations <= le)`` pairs, ending with ``+Inf``."""
        pairs = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


class StreamCounters(Protocol):
    """What the app counts per stream (``tokenstream.engine.accounting.StreamStats``)."""

    active: int
    started: int
    completed: int
    disconnected: int
    failed: int
    events_sent: int
    store_errors: int


class DeadlineRecorder:
    """Wraps the pacer's clock and remembers the last deadline it was asked to sleep until."""

    __slots__ = ("_clock", "deadline")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.deadline = clock.now()

    def now(self) -> float:
        return self._clock.now()

    def sleep_until(self, deadline: float) -> Coroutine[Any, Any, None]:
        # not a coroutine itself: handing out the inner one saves a frame on every event
        self.deadline = deadline
        return self._clock.sleep_until(deadline)
