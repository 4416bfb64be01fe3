"""Self-measurement: pacing lateness and stream counters, served as Prometheus text.

The hot path only increments plain integers and one histogram bucket
(``tokenstream.engine.lateness``); the Prometheus metric families are built when
``GET /metrics`` is scraped (a custom collector), so a stream pays no lock and no label
lookup per event.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from tokenstream.engine.lateness import LatenessHistogram, StreamCounters

__all__ = ["CONTENT_TYPE", "metrics_registry", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


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
