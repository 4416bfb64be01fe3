"""GET /metrics: Prometheus text with pacing lateness and stream counters."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tokenstream.engine.clock import Cancellable, FakeClock
from tokenstream.engine.lateness import LATENESS_BUCKETS, LatenessHistogram

from support import MakeClient


class LateClock(FakeClock):
    """Wakes every real sleep ``late`` seconds after its deadline."""

    def __init__(self, late: float) -> None:
        super().__init__()
        self.late = late

    async def sleep_until(self, deadline: float) -> None:
        if deadline > self._now:
            self._now = deadline + self.late
        await super().sleep_until(deadline)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Cancellable:
        return super().call_at(deadline + self.late, callback)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _bucket(samples: Samples, le: str) -> float:
    return samples[("tokenstream_pacing_lateness_seconds_bucket", (("le", le),))]


async def _scrape(client: TestClient[web.Request, web.Application]) -> tuple[str, Samples]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    return text, _samples(text)


async def test_counts_events_and_measures_lateness(make_client: MakeClient) -> None:
    client = await make_client(clock=LateClock(0.003))
    response = await client.get(
        "/v1/stream",
        params={"prompt": "one two three four five", "source": "echo",
                "tokens_per_second": "50", "ttft_ms": "0", "jitter": "0"},
    )
    await response.read()
    _, samples = await _scrape(client)
    assert samples[("tokenstream_events_sent_total", ())] == 5
    assert samples[("tokenstream_streams_started_total", ())] == 1
    assert samples[("tokenstream_streams_completed_total", ())] == 1
    assert samples[("tokenstream_active_streams", ())] == 0
    assert samples[("tokenstream_pacing_lateness_seconds_count", ())] == 5
    # the first event is due at once; the four after it each woke 3 ms late
    assert _bucket(samples, "0.002") == 1
    assert _bucket(samples, "0.005") == 5
    assert samples[("tokenstream_pacing_lateness_seconds_sum", ())] == pytest.approx(0.012)


async def test_unpaced_streams_count_events_but_have_no_lateness(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    response = await client.get(
        "/v1/stream", params={"prompt": "a b c", "source": "echo", "tokens_per_second": "0"}
    )
    await response.read()
    _, samples = await _scrape(client)
    assert samples[("tokenstream_events_sent_total", ())] == 3
    assert samples[("tokenstream_pacing_lateness_seconds_count", ())] == 0


async def test_exposes_every_documented_metric(make_client: MakeClient) -> None:
    client = await make_client()
    text, samples = await _scrape(client)
    for name in (
        "tokenstream_active_streams",
        "tokenstream_events_sent_total",
        "tokenstream_client_disconnects_total",
        "tokenstream_stream_errors_total",
        "tokenstream_pacing_lateness_seconds_count",
        "process_resident_memory_bytes",
    ):
        assert (name, ()) in samples, name
    assert "# TYPE tokenstream_pacing_lateness_seconds histogram" in text
    assert _bucket(samples, "+Inf") == 0


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    histogram = LatenessHistogram((0.001, 0.005))
    for value in (0.0, 0.001, 0.002, 0.005, 0.5):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.001", 2), ("0.005", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(0.508)


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        LatenessHistogram((0.005, 0.001))
    assert list(LATENESS_BUCKETS) == sorted(LATENESS_BUCKETS)
