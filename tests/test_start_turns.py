"""New streams wait their turn while the running streams' timers are late.

How turns are given out is tested on a fake loop in test_scheduler.py; here, that both
stream endpoints take one, that the wait is counted at /metrics, and that a scripted reply's
schedule begins at the request's arrival, so a short wait comes out of the time to first
token.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenstream.app import STATE, _schedule_start
from tokenstream.clock import FakeClock
from tokenstream.config import load_config
from tokenstream.pacer import PacingProfile
from tokenstream.scheduler import BucketClock

from support import MakeClient


class WaitingClock(BucketClock):
    """A BucketClock whose every start has waited ``waited`` seconds; records ``max_wait``."""

    def __init__(self, waited: float) -> None:
        super().__init__()
        self.waited = waited
        self.asked: list[float] = []

    async def wait_turn(self, max_wait: float) -> float | None:
        self.asked.append(max_wait)
        return self.waited


def _counters(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("tokenstream_stream_start_wait")
    }


async def test_both_stream_endpoints_wait_for_a_turn_and_the_waits_are_counted(
    make_client: MakeClient, tmp_path: Any
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("server:\n  max_start_wait_s: 0.5\n", encoding="utf-8")
    clock = WaitingClock(waited=0.004)
    client = await make_client(load_config(config_file), clock)
    response = await client.get(
        "/v1/stream", params={"prompt": "a b c", "source": "echo", "tokens_per_second": "0"}
    )
    assert (await response.read()).endswith(b"data: [DONE]\n\n")
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "tokenstream-1", "stream": True,
              "messages": [{"role": "user", "content": "hi"}],
              "tokenstream": {"tokens_per_second": 0}},
    )
    assert (await response.read()).endswith(b"data: [DONE]\n\n")
    assert clock.asked == [0.5, 0.5]
    counters = _counters(await (await client.get("/metrics")).text())
    assert counters["tokenstream_stream_start_waits_total"] == 2
    assert counters["tokenstream_stream_start_wait_seconds_total"] == pytest.approx(0.008)
    stats = client.app[STATE].stats
    assert (stats.start_waits, stats.started) == (2, 2)


async def test_a_start_that_went_straight_through_is_not_counted(
    make_client: MakeClient,
) -> None:
    client = await make_client(clock=BucketClock())  # on time: wait_turn returns None
    response = await client.get(
        "/v1/stream", params={"prompt": "a b", "source": "echo", "tokens_per_second": "0"}
    )
    await response.read()
    counters = _counters(await (await client.get("/metrics")).text())
    assert counters["tokenstream_stream_start_waits_total"] == 0


def test_the_schedule_begins_at_arrival_unless_the_first_token_would_be_overdue() -> None:
    clock = FakeClock(start=10.0)
    state: Any = type("State", (), {"clock": clock})()
    profile = PacingProfile(tokens_per_second=50, ttft_ms=300, jitter=0)
    clock.advance(0.1)  # 100 ms spent starting, waiting for a turn among them
    assert _schedule_start(state, 10.0, profile) == 10.0  # first token still at 10.3
    clock.advance(0.5)  # longer than the time to first token
    assert _schedule_start(state, 10.0, profile) == pytest.approx(10.3)  # due now, 10.6
    no_wait = PacingProfile(tokens_per_second=50, ttft_ms=0, jitter=0)
    assert _schedule_start(state, 10.0, no_wait) == pytest.approx(10.6)
