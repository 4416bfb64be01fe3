"""A recorded reply played again: every token at its recorded arrival time, on the scheduled
path (``playout``), so replay keeps the millisecond precision of scripted replies.

A recording is the reply's events, each with its arrival time relative to the request
(``TimedEvent``). ``replay_schedule`` turns it into the deadlines a ``Playout`` keeps: the
reply text, the reasoning and each tool call's arguments are tokenized as they are for any
reply, and a token is due at ``start + arrival / speed`` of the event that brought its last
character, so the tokens of one burst share its arrival, and a token split across two
events waits for the second. Every other event (a tool call's start and end, the finish,
the usage, a new model name) is due at its own arrival.

A recording can also be re-paced by a profile instead (``repaced_schedule``): its text goes
through the ordinary pacing, and its finish and usage close the reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Sequence
from itertools import accumulate

from tokenstream.engine.clock import TimerClock
from tokenstream.engine.events import (
    Finish,
    PacedEvent,
    ReasoningDelta,
    ReplyEncoder,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tokenstream.engine.lateness import LatenessHistogram, StreamCounters
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.playout import EventSink, Playout
from tokenstream.engine.reply import ReplyProgress, ScheduledItem, scheduled_reply
from tokenstream.engine.tokenizer import Tokenizer

__all__ = [
    "ReplayedReply",
    "TimedEvent",
    "closing_events",
    "repaced_schedule",
    "replay_schedule",
]

TimedEvent = tuple[float, ReplyEvent]
"""An event of a recorded reply and its arrival, in seconds after the request was sent."""

_Typed = TextDelta | ReasoningDelta | ToolCallDelta


def _run_kind(event: ReplyEvent) -> tuple[str, int] | None:
    """Which run of typed text ``event`` belongs to (consecutive events of one kind are
    tokenized together); None for an event that is not typed."""
    if isinstance(event, TextDelta):
        return ("text", 0)
    if isinstance(event, ReasoningDelta):
        return ("reasoning", 0)
    if isinstance(event, ToolCallDelta):
        return ("arguments", event.index)
    return None


def _text_of(event: _Typed) -> str:
    return event.arguments if isinstance(event, ToolCallDelta) else event.text


def _as_kind(event: _Typed, text: str) -> ReplyEvent | None:
    """``event``'s kind for one piece of its run; None for reply text (a ``Piece``)."""
    if isinstance(event, ReasoningDelta):
        return ReasoningDelta(text)
    if isinstance(event, ToolCallDelta):
        return ToolCallDelta(event.index, text)
    return None


def _runs(events: Sequence[TimedEvent]) -> Iterator[list[TimedEvent]]:
    """``events`` in runs: consecutive typed events of one kind together, any other alone."""
    run: list[TimedEvent] = []
    kind: tuple[str, int] | None = None
    for timed in events:
        event_kind = _run_kind(timed[1])
        if run and (event_kind is None or event_kind != kind):
            yield run
            run = []
        run.append(timed)
        kind = event_kind
        if event_kind is None:
            yield run
            run = []
    if run:
        yield run


def _typed_run(
    run: Sequence[TimedEvent], tokenizer: Tokenizer, start: float, speed: float
) -> Iterator[tuple[float, ScheduledItem]]:
    """A run of typed text, tokenized whole; each piece due when its last character came."""
    texts = [_text_of(event) for _, event in run if isinstance(event, _Typed)]
    ends = list(accumulate(len(text) for text in texts))  # where each event's text ends
    first = run[0][1]
    assert isinstance(first, _Typed)
    position = 0
    source = 0  # the event that brought the piece's last character
    for piece in tokenizer.shared_pieces("".join(texts)):
        position += len(piece.text)
        while ends[source] < position:
            source += 1
        deadline = start + run[source][0] / speed
        kind = _as_kind(first, piece.text)
        yield deadline, piece if kind is None else PacedEvent(kind, piece.tokens)


def replay_schedule(
    events: Sequence[TimedEvent], tokenizer: Tokenizer, start: float, speed: float = 1.0
) -> Iterator[tuple[float, ScheduledItem]]:
    """Every event of a recorded reply with its deadline: its recorded arrival after
    ``start``, divided by ``speed`` (see the module's docstring). Deadlines never go back."""
    latest = start
    for run in _runs(events):
        if _run_kind(run[0][1]) is not None:
            items: Iterator[tuple[float, ScheduledItem]] = _typed_run(
                run, tokenizer, start, speed
            )
        else:
            at, event = run[0]
            items = iter(((start + at / speed, PacedEvent(event, 0)),))
        for deadline, item in items:
            latest = max(latest, deadline)
            yield latest, item


def repaced_schedule(
    events: Sequence[TimedEvent],
    *,
    tokenizer: Tokenizer,
    profile: PacingProfile,
    start: float,
    progress: ReplyProgress,
) -> Iterator[tuple[float, ScheduledItem]]:
    """A recorded reply paced by ``profile`` as a scripted one is, each run of typed text
    tokenized whole; its finish and usage are left out (they close the reply:
    ``closing_events``)."""
    paced: list[ReplyEvent] = []
    for run in _runs(events):
        first = run[0][1]
        if isinstance(first, Finish | Usage):
            continue
        if isinstance(first, _Typed):
            text = "".join(_text_of(event) for _, event in run if isinstance(event, _Typed))
            joined = _as_kind(first, text)
            paced.append(TextDelta(text) if joined is None else joined)
        else:
            paced.append(first)
    return scheduled_reply(
        tuple(paced), tokenizer=tokenizer, profile=profile, start=start, max_tokens=None,
        progress=progress,
    )


def closing_events(events: Sequence[TimedEvent]) -> list[ReplyEvent]:
    """A recorded reply's finish and usage, for a reply re-paced (the last of each)."""
    finish = [event for _, event in events if isinstance(event, Finish)]
    usage = [event for _, event in events if isinstance(event, Usage)]
    return [*finish[-1:], *usage[-1:]]


class ReplayedReply:
    """A recorded reply played out at the deadlines of its schedule (``starting.Reply``)."""

    __slots__ = ("_closing", "_items", "_playout", "clock", "lateness", "stats")

    def __init__(
        self,
        items: Iterator[tuple[float, ScheduledItem]],
        *,
        closing: Sequence[ReplyEvent],
        clock: TimerClock,
        stats: StreamCounters,
        lateness: LatenessHistogram | None,
    ) -> None:
        """``closing``: what the reply ends with that its schedule does not play (a re-paced
        reply's finish and usage)."""
        self._items = items
        self._closing = list(closing)
        self.clock = clock
        self.stats = stats
        self.lateness = lateness
        self._playout: Playout | None = None

    @property
    def tokens(self) -> int:
        return 0 if self._playout is None else self._playout.tokens

    @property
    def watch_clock(self) -> TimerClock:
        return self.clock

    def play(self, sse: EventSink, encoder: ReplyEncoder) -> Awaitable[None]:
        self._playout = Playout(
            sse, self.clock, self._items, encoder, self.stats, lateness=self.lateness
        )
        return self._playout.run()

    def closing_events(self) -> list[ReplyEvent]:
        return self._closing

    async def aclose(self) -> None:
        pass  # nothing is held open: the recording is all there

