"""The recorded timing of a replayed reply (``engine.replay``): the pure schedule, and a
playout of it on the injectable clock (every write at start + recorded arrival / speed)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tokenstream.engine.accounting import StreamStats
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.events import (
    Finish,
    PacedEvent,
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.replay import (
    ReplayedReply,
    TimedEvent,
    closing_events,
    repaced_schedule,
    replay_schedule,
)
from tokenstream.engine.reply import ReplyProgress
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding
from tokenstream.sse.transport import BATCH_BYTES


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding())


def _text(item: Piece | PacedEvent) -> str:
    if isinstance(item, Piece):
        return item.text
    event = item.event
    if isinstance(event, TextDelta | ReasoningDelta):
        return event.text
    if isinstance(event, ToolCallDelta):
        return event.arguments
    return ""


def test_the_tokens_of_a_burst_share_its_arrival(tokenizer: Tokenizer) -> None:
    events: list[TimedEvent] = [
        (0.0103, TextDelta("Hello world, how")),
        (0.0251, TextDelta(" are you?")),
    ]
    schedule = list(replay_schedule(events, tokenizer, start=100.0))
    assert [(round(deadline, 9), _text(item)) for deadline, item in schedule] == [
        (100.0103, "Hello"),
        (100.0103, " world"),
        (100.0103, ","),
        (100.0103, " how"),
        (100.0251, " are"),
        (100.0251, " you"),
        (100.0251, "?"),
    ]
    assert all(isinstance(item, Piece) and item.tokens == 1 for _, item in schedule)


def test_a_token_split_across_two_events_waits_for_the_second(tokenizer: Tokenizer) -> None:
    family = "👩‍👩‍👧‍👦"
    events: list[TimedEvent] = [
        (0.004, TextDelta("Hel")),
        (0.019, TextDelta("lo there " + family[:2])),
        (0.047, TextDelta(family[2:] + " ok")),
    ]
    schedule = list(replay_schedule(events, tokenizer, start=0.0))
    text = "".join(_text(item) for _, item in schedule)
    assert text == "Hello there " + family + " ok"  # byte-exact
    due = {_text(item): deadline for deadline, item in schedule}
    assert due["Hello"] == pytest.approx(0.019)  # "lo" came with the second event
    assert due[" there"] == pytest.approx(0.019)
    assert due[" ok"] == pytest.approx(0.047)
    # the pieces of the family emoji end in the third event, or earlier in the second
    emoji_deadlines = [d for d, item in schedule if _text(item) and _text(item) in family]
    assert emoji_deadlines[-1] == pytest.approx(0.047)
    assert [d for d, _ in schedule] == sorted(d for d, _ in schedule)


def test_speed_divides_every_offset(tokenizer: Tokenizer) -> None:
    events: list[TimedEvent] = [
        (0.2, TextDelta("One")), (0.5, TextDelta(" two")), (0.9, Finish("stop")),
    ]
    schedule = list(replay_schedule(events, tokenizer, start=10.0, speed=4.0))
    assert [deadline for deadline, _ in schedule] == pytest.approx([10.05, 10.125, 10.225])


def test_every_kind_of_event_at_its_own_arrival(tokenizer: Tokenizer) -> None:
    usage = Usage(12, 30)
    events: list[TimedEvent] = [
        (0.100, ReasoningDelta("Let me")),
        (0.120, ReasoningDelta(" think.")),
        (0.300, TextDelta("Sure.")),
        (0.400, ToolCallStart(0, "call_1", "get_weather")),
        (0.410, ToolCallDelta(0, '{"city"')),
        (0.430, ToolCallDelta(0, ': "Paris"}')),
        (0.440, ToolCallEnd(0)),
        (0.500, Finish("tool_calls")),
        (0.501, usage),
    ]
    schedule = list(replay_schedule(events, tokenizer, start=0.0))
    reasoning = [(d, item) for d, item in schedule
                 if isinstance(item, PacedEvent) and isinstance(item.event, ReasoningDelta)]
    assert "".join(_text(item) for _, item in reasoning) == "Let me think."
    assert all(item.tokens >= 1 for _, item in reasoning)
    assert reasoning[0][0] == pytest.approx(0.100)
    assert reasoning[-1][0] == pytest.approx(0.120)
    arguments = [(d, item) for d, item in schedule
                 if isinstance(item, PacedEvent) and isinstance(item.event, ToolCallDelta)]
    assert "".join(_text(item) for _, item in arguments) == '{"city": "Paris"}'
    assert {round(d, 3) for d, _ in arguments} == {0.41, 0.43}
    rest = [(round(d, 3), item.event) for d, item in schedule
            if isinstance(item, PacedEvent) and item.tokens == 0]
    assert rest == [
        (0.4, ToolCallStart(0, "call_1", "get_weather")),
        (0.44, ToolCallEnd(0)),
        (0.5, Finish("tool_calls")),
        (0.501, usage),
    ]


def _kind(item: Piece | PacedEvent) -> str:
    return "Piece" if isinstance(item, Piece) else type(item.event).__name__


class _Sink:
    """Records each write with the clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.batch_bytes = BATCH_BYTES
        self.writes: list[tuple[float, bytes]] = []

    def write_nowait(self, data: bytes, now: float | None = None) -> bool:
        self.writes.append((self.clock.now(), data))
        return True

    async def send(self, data: bytes) -> None:
        self.writes.append((self.clock.now(), data))


class _Lines:
    """A wire format of one line per event: its text, or its type."""

    def piece(self, piece: Piece) -> bytes:
        return f"{piece.text}\n".encode()

    def event(self, event: ReplyEvent) -> bytes:
        return f"{_text(PacedEvent(event, 0)) or f'<{type(event).__name__}>'}\n".encode()

    def end(self) -> bytes:
        return b""

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        return b""


def _played(events: Sequence[TimedEvent], tokenizer: Tokenizer, speed: float
            ) -> tuple[FakeClock, _Sink]:
    clock = FakeClock(start=50.0)
    sink = _Sink(clock)
    reply = ReplayedReply(
        replay_schedule(events, tokenizer, clock.now(), speed),
        closing=(), clock=clock, stats=StreamStats(), lateness=None,
    )
    asyncio.run(_play(reply, sink))
    return clock, sink


async def _play(reply: ReplayedReply, sink: _Sink) -> None:
    await reply.play(sink, _Lines())


@pytest.mark.parametrize("speed", [1.0, 2.5])
def test_a_playout_writes_each_event_at_its_recorded_offset(
    tokenizer: Tokenizer, speed: float
) -> None:
    """Irregular arrivals (gaps from 0.3 ms to 1.2 s, bursts, a tool call, the ending)."""
    events: list[TimedEvent] = [
        (0.2114, TextDelta("The")),
        (0.2117, TextDelta(" quick brown")),
        (0.5902, TextDelta(" fox 🦊")),
        (1.7921, TextDelta(" jumps.")),
        (1.7999, ToolCallStart(0, "call_9", "jump")),
        (1.8034, ToolCallDelta(0, '{"height": 2}')),
        (1.8040, ToolCallEnd(0)),
        (1.9000, Finish("tool_calls")),
        (1.9003, Usage(5, 9)),
    ]
    clock, sink = _played(events, tokenizer, speed)
    lines = [(at, line) for at, data in sink.writes for line in data.decode().splitlines()]
    expected = [(50.0 + d / speed, _text(item) or f"<{_kind(item)}>")
                for d, item in replay_schedule(events, tokenizer, 0.0)]
    assert [line for _, line in lines] == [line for _, line in expected]
    assert [at for at, _ in lines] == pytest.approx([at for at, _ in expected], abs=1e-9)
    # one timer per distinct arrival, each reached exactly
    assert clock.sleeps == pytest.approx(sorted({50.0 + at / speed for at, _ in events}))


def test_re_paced_by_a_profile_the_text_is_whole_and_the_ending_recorded(
    tokenizer: Tokenizer,
) -> None:
    events: list[TimedEvent] = [
        (0.3, TextDelta("Hel")), (0.9, TextDelta("lo world")), (1.0, Finish("length")),
        (1.1, Usage(3, 4)),
    ]
    steady = PacingProfile(tokens_per_second=10, ttft_ms=100)
    schedule = list(repaced_schedule(
        events, tokenizer=tokenizer, profile=steady, start=0.0, progress=ReplyProgress()
    ))
    assert [(round(d, 6), _text(item)) for d, item in schedule] == [
        (0.1, "Hello"), (0.2, " world"),  # tokenized as one text, paced by the profile
    ]
    assert closing_events(events) == [Finish("length"), Usage(3, 4)]
