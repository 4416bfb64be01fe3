"""Held (coalesced) writes of unpaced replies: order kept, and never held through a wait."""

from __future__ import annotations

import json

from aiohttp.test_utils import make_mocked_request

from tokenstream.clock import FakeClock
from tokenstream.transport import HOLD_LIMIT, HeartbeatClock, SSEResponse

from support import MakeClient, parse_sse


class RecordingResponse:
    """Stands in for the aiohttp response: records each write with the clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.writes: list[tuple[float, bytes]] = []
        self.eof = False

    async def write(self, data: bytes) -> None:
        self.writes.append((self.clock.now(), data))

    async def write_eof(self) -> None:
        self.eof = True


class IdleTransport:
    """A socket that takes every write at once: nothing is ever queued."""

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def is_closing(self) -> bool:
        return False


def _sse(clock: FakeClock) -> tuple[SSEResponse, RecordingResponse]:
    request = make_mocked_request("GET", "/v1/stream", transport=IdleTransport())
    sse = SSEResponse(request, clock)
    response = RecordingResponse(clock)
    sse.response = response  # type: ignore[assignment]
    return sse, response


async def test_held_events_go_out_together_and_in_order() -> None:
    clock = FakeClock()
    sse, response = _sse(clock)
    await sse.send(b"a", hold=True)
    await sse.send(b"b", hold=True)
    assert response.writes == []
    await sse.send(b"c")
    assert [data for _, data in response.writes] == [b"abc"]


async def test_holding_stops_at_the_limit() -> None:
    sse, response = _sse(FakeClock())
    chunk = b"x" * 1000
    for _ in range(HOLD_LIMIT // 1000 + 1):
        await sse.send(chunk, hold=True)
    assert len(response.writes) == 1
    assert len(response.writes[0][1]) >= HOLD_LIMIT


async def test_held_events_are_written_before_the_pacer_waits() -> None:
    clock = FakeClock()
    sse, response = _sse(clock)
    pacing = HeartbeatClock(clock, sse, interval=None)
    await sse.send(b"first", hold=True)
    await pacing.sleep_until(0.0)  # due now: no wait, so nothing needs to go out yet
    assert response.writes == []
    await pacing.sleep_until(0.5)  # a real wait (a pause, a ttft): write first
    assert response.writes == [(0.0, b"first")]
    assert clock.now() == 0.5


async def test_close_writes_what_is_held() -> None:
    sse, response = _sse(FakeClock())
    await sse.send(b"tail", hold=True)
    await sse.close()
    assert [data for _, data in response.writes] == [b"tail"]
    assert response.eof


async def test_an_unpaced_reply_with_pauses_arrives_whole(make_client: MakeClient) -> None:
    client = await make_client()
    text = "One. Two!\nThree? Four."
    response = await client.get(
        "/v1/stream",
        params={"prompt": text, "source": "echo", "format": "json", "tokens_per_second": "0",
                "pause_ms": "200", "ttft_ms": "100"},
    )
    events = parse_sse(await response.read())
    assert events[-1].data == "[DONE]"
    assert "".join(json.loads(e.data)["token"] for e in events[:-1]) == text
    assert [e.id for e in events[:-1]] == [str(i) for i in range(1, len(events))]
