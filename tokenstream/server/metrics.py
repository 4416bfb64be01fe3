"""Self-measurement: pacing lateness and stream counters, served as Prometheus text.

The hot path only increments plain integers and one histogram bucket; the Prometheus
metric families are built when ``GET /metrics`` is scraped (a custom collector), so a
stream pays no lock and no label lookup per event.

Pacing lateness is the time an event was actually written minus its deadline: what the
server adds to the schedule before the bytes reach the socket (the network and the client
add more, which ``scripts/bench.py`` measures at the client).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from tokenstream.engine.clock import Clock

__all__ = [
    "CONTENT_TYPE",
    "LATENESS_BUCKETS",
    "DeadlineRecorder",
    "LatenessHistogram",
    "StreamCounters",
    "metrics_registry",
    "render",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

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
    """What the app counts per stream (``tokenstream.server.app.StreamStats``)."""

    active: int
    started: int
    completed: int
    disconnected: int
    failed: int
    events_sent: int


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


class _TokenstreamCollector(Collector):
    def __init__(self, stats: StreamCounters, lateness: LatenessHistogram) -> None:
        self._stats = stats
        self._lateness = lateness

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield GaugeMetricFamily(
            "tokenstream_active_streams", "Streams being sent now.", value=stats.active
        )
        for name, documentation, value in (
            ("tokenstream_streams_started", "Streams started.", stats.started),
            ("tokenstream_streams_completed", "Streams sent to the end.", stats.completed),
            ("tokenstream_events_sent", "Reply pieces written to clients.", stats.events_sent),
            ("tokenstream_client_disconnects", "Streams ended by the client leaving.",
             stats.disconnected),
            ("tokenstream_stream_errors", "Streams ended by a server error.", stats.failed),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        histogram = self._lateness
        yield HistogramMetricFamily(
            "tokenstream_pacing_lateness_seconds",
            "Time a paced event was written minus its deadline.",
            buckets=histogram.cumulative(),
            sum_value=histogram.sum,
        )


def metrics_registry(stats: StreamCounters, lateness: LatenessHistogram) -> CollectorRegistry:
    """A registry of its own per app (no global state): the stream metrics and the process's."""
    registry = CollectorRegistry()
    registry.register(_TokenstreamCollector(stats, lateness))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition format (``CONTENT_TYPE``)."""
    return generate_latest(registry)
