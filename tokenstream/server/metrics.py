"""Self-measurement: pacing lateness and stream counters, served as Prometheus text.

The hot path only increments plain integers and one histogram bucket
(``tokenstream.engine.lateness``); the Prometheus metric families are built when
``GET /metrics`` is scraped (a custom collector), so a stream pays no lock and no label
lookup per event.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``tokenstream serve --workers N`` sets it; under
gunicorn the deployment does), a scrape reaches one worker but must count them all:
each worker copies its numbers into prometheus_client's per-process files every
``FLUSH_INTERVAL_S`` (and when it is scraped, and when it stops), and the scraped worker
adds every worker's files up with ``MultiProcessCollector``. Another worker's numbers are
therefore up to ``FLUSH_INTERVAL_S`` old; a worker killed outright loses what it counted
since its last flush.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from tokenstream.engine.lateness import LatenessHistogram, StreamCounters
from tokenstream.server.background import in_background

__all__ = [
    "CONTENT_TYPE",
    "FLUSH_INTERVAL_S",
    "MULTIPROC_DIR_ENV",
    "MetricsExport",
    "metrics_export",
    "render",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_INTERVAL_S = 1.0

_ACTIVE = ("tokenstream_active_streams", "Streams being sent now.")
_COUNTERS = (
    ("tokenstream_streams_started", "Streams started.", "started"),
    ("tokenstream_streams_completed", "Streams sent to the end.", "completed"),
    ("tokenstream_events_sent", "Reply pieces written to clients.", "events_sent"),
    ("tokenstream_client_disconnects", "Streams ended by the client leaving.", "disconnected"),
    ("tokenstream_stream_errors", "Streams ended by a server error.", "failed"),
    ("tokenstream_store_errors", "Operations on the shared store (Redis) that failed.",
     "store_errors"),
)
_LATENESS = (
    "tokenstream_pacing_lateness_seconds",
    "Time a paced event was written minus its deadline.",
)


class _TokenstreamCollector(Collector):
    """One process's numbers, read when scraped."""

    def __init__(self, stats: StreamCounters, lateness: LatenessHistogram) -> None:
        self._stats = stats
        self._lateness = lateness

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield GaugeMetricFamily(*_ACTIVE, value=stats.active)
        for name, documentation, attribute in _COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(stats, attribute))
        histogram = self._lateness
        yield HistogramMetricFamily(
            *_LATENESS, buckets=histogram.cumulative(), sum_value=histogram.sum
        )


class _SharedFiles:
    """This worker's numbers, copied into prometheus_client's multiprocess files.

    Multiprocess modes, chosen for what a sum over workers should mean:
    - active streams: ``livesum``, a worker that died sends nothing any more (the
      supervisor marks it dead, which removes its file);
    - counters: Counter files, summed over every worker that ever ran, so a total never
      goes down when a worker is restarted;
    - the lateness histogram, kept by the engine as plain bucket counts: each cumulative
      bucket and the sum as a ``sum`` gauge (dead workers' observations stay counted),
      turned back into one histogram when scraped (``_HistogramFromGauges``).
    """

    def __init__(self, stats: StreamCounters, lateness: LatenessHistogram) -> None:
        self._stats = stats
        self._lateness = lateness
        self._active = Gauge(*_ACTIVE, registry=None, multiprocess_mode="livesum")
        self._counters = [
            (Counter(name, documentation, registry=None), attribute)
            for name, documentation, attribute in _COUNTERS
        ]
        self._flushed = [0] * len(self._counters)
        name, documentation = _LATENESS
        self._buckets = Gauge(f"{name}_bucket", documentation, ["le"], registry=None,
                              multiprocess_mode="sum")
        self._sum = Gauge(f"{name}_sum", documentation, registry=None, multiprocess_mode="sum")

    def flush(self) -> None:
        stats = self._stats
        self._active.set(stats.active)
        for position, (counter, attribute) in enumerate(self._counters):
            value = getattr(stats, attribute)
            counter.inc(value - self._flushed[position])
            self._flushed[position] = value
        for le, count in self._lateness.cumulative():
            self._buckets.labels(le).set(count)
        self._sum.set(self._lateness.sum)


class _HistogramFromGauges(Collector):
    """Every worker's files, added up; the lateness gauges become one histogram again."""

    def __init__(self, path: str) -> None:
        self._files = MultiProcessCollector(None, path)

    def collect(self) -> Iterator[Metric]:
        name, documentation = _LATENESS
        buckets: dict[str, float] = {}
        total = 0.0
        for family in self._files.collect():
            if family.name == f"{name}_bucket":
                buckets = {sample.labels["le"]: sample.value for sample in family.samples}
            elif family.name == f"{name}_sum":
                total = sum(sample.value for sample in family.samples)
            else:
                yield family
        ordered = sorted(buckets.items(), key=lambda item: float(item[0]))
        yield HistogramMetricFamily(name, documentation, buckets=ordered, sum_value=total)


class MetricsExport:
    """What ``GET /metrics`` renders, and (with many workers) the flushing that feeds it."""

    def __init__(self, registry: CollectorRegistry, shared: _SharedFiles | None) -> None:
        self.registry = registry
        self._shared = shared

    @property
    def multiprocess(self) -> bool:
        return self._shared is not None

    def flush(self) -> None:
        if self._shared is not None:
            self._shared.flush()

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Flush every ``FLUSH_INTERVAL_S`` while the app runs, and once more at its end."""
        if self._shared is None:
            yield
            return
        try:
            async with in_background(self._flush_periodically()):
                yield
        finally:
            self.flush()

    async def _flush_periodically(self) -> None:
        while True:
            self.flush()
            await asyncio.sleep(FLUSH_INTERVAL_S)

    def render(self) -> bytes:
        self.flush()  # the scraped worker's own numbers are current
        return generate_latest(self.registry)


def metrics_export(stats: StreamCounters, lateness: LatenessHistogram) -> MetricsExport:
    """A registry of its own per app (no global state).

    One process: its stream metrics and its process metrics (CPU, memory). Many workers
    (``PROMETHEUS_MULTIPROC_DIR`` set): every worker's stream metrics added up; no process
    metrics, as prometheus_client's multiprocess mode cannot add those up.
    """
    # os.environ, not a parameter: prometheus_client chooses its value class from it too
    path = os.environ.get(MULTIPROC_DIR_ENV)
    registry = CollectorRegistry()
    if not path:
        registry.register(_TokenstreamCollector(stats, lateness))
        ProcessCollector(registry=registry)
        return MetricsExport(registry, None)
    registry.register(_HistogramFromGauges(path))
    return MetricsExport(registry, _SharedFiles(stats, lateness))


def render(export: MetricsExport) -> bytes:
    """The Prometheus text exposition format (``CONTENT_TYPE``)."""
    return export.render()
