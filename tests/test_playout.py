"""Playout: events written at their deadlines from timer callbacks, with no task per event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import pytest

from tokenstream.engine.accounting import StreamStats
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.playout import Playout
from tokenstream.engine.registry import StopReason, StreamControl
from tokenstream.engine.reply import ReplyProgress, scheduled_reply
from tokenstream.engine.scheduler import BucketClock
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding
from tokenstream.engine.watch import StreamWatch
from tokenstream.sse.transport import BATCH_BYTES, PING, ClientGone

from support import FakeTimerLoop, JumpingTimerLoop, MakeClient, ManualClock, parse_sse, wait_for


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding())


AnyClock = FakeClock | ManualClock | BucketClock


@pytest.fixture(params=["fake", "bucket"])
def make_clock(request: pytest.FixtureRequest) -> Callable[[], FakeClock | BucketClock]:
    """A clock whose time jumps to each deadline: ``FakeClock``, whose timers are ``call_at``
    timers, or the shared ``BucketClock``, where the playout is the bucket entry itself."""
    if request.param == "fake":
        return FakeClock
    return lambda: BucketClock(loop=JumpingTimerLoop())


class RawText:
    """A wire format that writes each piece's bare text (so writes read as the reply)."""

    def piece(self, piece: Piece) -> bytes:
        return piece.text.encode()


class RecordingSink:
    """Stands in for ``SSEResponse``: records each write with the clock's time and path."""

    def __init__(self, clock: AnyClock, *, room: int | None = None) -> None:
        self.clock = clock
        self.writes: list[tuple[float, str, bytes]] = []
        self.room = room  # writes that go out at once before the client falls behind
        self.last_write = clock.now()
        self.batch_bytes = BATCH_BYTES
        self.gone = False

    def write_nowait(self, data: bytes, now: float | None = None) -> bool:
        if self.gone:
            raise ClientGone
        if self.room is not None:
            if self.room == 0:
                return False
            self.room -= 1
        self._record("now", data)
        return True

    async def send(self, data: bytes) -> None:
        self._record("send", data)

    def _record(self, path: str, data: bytes) -> None:
        self.writes.append((self.clock.now(), path, data))
        self.last_write = self.clock.now()

    @property
    def text(self) -> str:
        return b"".join(data for _, _, data in self.writes if data != PING).decode()


def _events(tokenizer: Tokenizer, text: str, clock: AnyClock,
            max_tokens: int | None = None, **profile: object) -> Iterator[tuple[float, Piece]]:
    return scheduled_reply(
        text,
        tokenizer=tokenizer,
        profile=PacingProfile.model_validate(profile),
        start=clock.now(),
        max_tokens=max_tokens,
        progress=ReplyProgress(),
    )


def _playout(sink: RecordingSink, clock: AnyClock,
             events: Iterator[tuple[float, Piece]], **options: float | None) -> Playout:
    return Playout(sink, clock, events, RawText(), StreamStats(), **options)  # type: ignore[arg-type]


async def test_each_event_is_written_at_its_deadline(
    tokenizer: Tokenizer, make_clock: Callable[[], FakeClock | BucketClock]
) -> None:
    clock = make_clock()
    sink = RecordingSink(clock)
    text = "one two three four five"
    playout = _playout(sink, clock, _events(tokenizer, text, clock, tokens_per_second=50,
                                            ttft_ms=100))
    await playout.run()
    assert [t for t, _, _ in sink.writes] == pytest.approx([0.1, 0.12, 0.14, 0.16, 0.18])
    assert sink.text == text
    assert playout.tokens == 5
    assert {path for _, path, _ in sink.writes} == {"now"}


async def test_events_due_together_go_out_in_batches_in_order(
    tokenizer: Tokenizer, make_clock: Callable[[], FakeClock | BucketClock]
) -> None:
    clock = make_clock()
    sink = RecordingSink(clock)
    text = "word " * 20_000
    stats = StreamStats()
    playout = Playout(sink, clock, _events(tokenizer, text, clock, tokens_per_second=None),
                      RawText(), stats)
    await playout.run()
    assert sink.text == text
    assert 1 < len(sink.writes) < 20_000 // 100
    assert all(len(data) < BATCH_BYTES + 100 for _, _, data in sink.writes)
    assert stats.events_sent == len(tokenizer.pieces(text))


async def test_what_is_due_is_written_before_a_pause(
    tokenizer: Tokenizer, make_clock: Callable[[], FakeClock | BucketClock]
) -> None:
    clock = make_clock()
    sink = RecordingSink(clock)
    events = _events(tokenizer, "One. Two.", clock, tokens_per_second=None, pause_ms=500)
    await _playout(sink, clock, events).run()
    assert [(t, data) for t, _, data in sink.writes] == [
        (0.0, b"One."), (pytest.approx(0.5), b" Two."),
    ]


async def _watched(
    playout: Playout, clock: FakeClock | BucketClock, sink: RecordingSink, **watch: float
) -> StopReason | None:
    """Play with the runner's watch (heartbeats, time limit), as the runner does: the reason
    the stream was stopped, or None if it played to its end."""
    control = StreamControl(None)

    async def play() -> None:
        with control.interruptible():
            await playout.run()

    task = asyncio.ensure_future(play())
    control.task = task  # type: ignore[assignment]
    stream_watch = StreamWatch(clock, control, sink=sink, **watch)
    try:
        await task
    except asyncio.CancelledError:
        return control.consume_stop()
    finally:
        stream_watch.cancel()
    return None


async def test_pings_fill_a_silence_longer_than_the_heartbeat(
    tokenizer: Tokenizer, make_clock: Callable[[], FakeClock | BucketClock]
) -> None:
    clock = make_clock()
    sink = RecordingSink(clock)
    events = _events(tokenizer, "late reply", clock, tokens_per_second=1, ttft_ms=35_000)
    assert await _watched(_playout(sink, clock, events), clock, sink, heartbeat=10) is None
    assert [(t, data) for t, _, data in sink.writes] == [
        (10.0, PING), (20.0, PING), (30.0, PING), (35.0, b"late"), (36.0, b" reply"),
    ]


async def test_the_time_limit_ends_the_stream_at_the_limit(
    tokenizer: Tokenizer, make_clock: Callable[[], FakeClock | BucketClock]
) -> None:
    clock = make_clock()
    sink = RecordingSink(clock)
    events = _events(tokenizer, "a b c d e f", clock, tokens_per_second=1)
    assert await _watched(_playout(sink, clock, events), clock, sink, limit=2.5) == "time_limit"
    assert clock.now() == 2.5
    assert sink.text == "a b c"


async def test_a_write_that_must_wait_goes_through_the_task(
    tokenizer: Tokenizer, make_clock: Callable[[], FakeClock | BucketClock]
) -> None:
    clock = make_clock()
    sink = RecordingSink(clock, room=2)
    text = "one two three four five"
    await _playout(sink, clock, _events(tokenizer, text, clock, tokens_per_second=10)).run()
    assert sink.text == text
    assert [path for _, path, _ in sink.writes] == ["now", "now", "send", "send", "send"]


async def test_a_client_that_left_ends_the_playout(
    tokenizer: Tokenizer, make_clock: Callable[[], FakeClock | BucketClock]
) -> None:
    clock = make_clock()
    sink = RecordingSink(clock)
    playout = _playout(sink, clock, _events(tokenizer, "a b c d", clock, tokens_per_second=1))
    task = asyncio.ensure_future(playout.run())
    await wait_for(lambda: len(sink.writes) == 2)
    sink.gone = True
    with pytest.raises(ClientGone):
        await task
    assert sink.text == "a b"


async def test_a_failing_event_is_raised_to_the_task(
    tokenizer: Tokenizer, make_clock: Callable[[], FakeClock | BucketClock]
) -> None:
    def broken() -> Iterator[tuple[float, Piece]]:
        yield 0.0, Piece("fine", 1)
        raise RuntimeError("the schedule broke")

    clock = make_clock()
    sink = RecordingSink(clock)
    with pytest.raises(RuntimeError, match="the schedule broke"):
        await _playout(sink, clock, broken()).run()
    assert sink.text == "fine"


async def test_cancelling_the_task_cancels_its_timer(tokenizer: Tokenizer) -> None:
    clock = ManualClock()
    sink = RecordingSink(clock)
    playout = _playout(sink, clock, _events(tokenizer, "a b c", clock, tokens_per_second=1))
    task = asyncio.ensure_future(playout.run())
    await asyncio.sleep(0)
    assert sink.text == "a" and clock.sleepers == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0
    clock.advance(10)
    await asyncio.sleep(0)
    assert sink.text == "a"


async def test_on_the_bucket_clock_streams_due_together_share_one_pass(
    tokenizer: Tokenizer,
) -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    sinks = [RecordingSink(clock) for _ in range(3)]
    playouts = [_playout(sink, clock, _events(tokenizer, "a b c", clock, tokens_per_second=50))
                for sink in sinks]
    tasks = [asyncio.ensure_future(playout.run()) for playout in playouts]
    await asyncio.sleep(0)
    assert [sink.text for sink in sinks] == ["a"] * 3
    # the three wait in one bucket, as themselves, behind one loop timer
    assert clock.pending_timers == 1 and loop.armed == [pytest.approx(0.02)]
    assert {playout.bucket for playout in playouts} == {20}
    await loop.advance_to(0.02)
    assert [sink.text for sink in sinks] == ["a b"] * 3
    assert [t for t, _, _ in sinks[0].writes] == [0.0, pytest.approx(0.02)]
    await loop.advance_to(1.0)
    await asyncio.gather(*tasks)
    assert [sink.text for sink in sinks] == ["a b c"] * 3
    assert clock.pending_timers == 0 and loop.armed == []
    assert {playout.bucket for playout in playouts} == {None}


async def test_on_the_bucket_clock_a_cancelled_stream_leaves_its_bucket(
    tokenizer: Tokenizer,
) -> None:
    loop = FakeTimerLoop()
    clock = BucketClock(loop=loop)
    sink = RecordingSink(clock)
    playout = _playout(sink, clock, _events(tokenizer, "a b c", clock, tokens_per_second=1))
    task = asyncio.ensure_future(playout.run())
    await asyncio.sleep(0)
    assert sink.text == "a" and clock.pending_timers == 1 and playout.bucket == 1000
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending_timers == 0 and playout.bucket is None and loop.armed == []
    await loop.advance_to(10)
    assert sink.text == "a"


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
    stream_id = response.headers["X-Tokenstream-Stream-Id"]
    assert [e.id for e in events] == [f"{stream_id}:{i}" for i in range(1, len(events) + 1)]
