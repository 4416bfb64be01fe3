"""Live stage: text that arrives over time, tokenized on arrival and paced with catch-up.

A reader task takes the source's events (``engine.events``) as fast as they come, stamps
each with its arrival time on the pacing clock, tokenizes text incrementally and puts the
pieces in an ``ArrivalBuffer``. ``pace_live`` takes them out at
their deadlines: never before a piece arrived, and, with the profile's ``max_buffer_ms``,
never later than that after it arrived (see ``pacer.catch_up_gap``). Reading eagerly is
what lets the pacer see the whole backlog of a burst, and stamps true arrival times.

Every event that is not text keeps its place: the tokenizer's held-back text is flushed
before one, so every piece that arrived before it is sent before it, and it is sent as soon
as those are, without a gap of its own. A source that fails with ``UpstreamStreamError``
(the upstream's error event, a cut connection) fails in its place too: as a ``ReplyError``
event after the text that came before it.

With ``chunk_tokens`` > 1, consecutive buffered pieces are merged, but a chunk never waits
for text that has not arrived.

When the first piece is due as soon as it is final (``ttft_ms`` 0, one token per event, as
in the ``smooth`` and ``instant`` profiles), ``pace_live`` takes the source's first items
itself, up to the first piece, and starts the reader task only then: the first token does
not wait for a task to be created, scheduled and woken.

Closing ``pace_live`` (a client left) cancels the reader, which closes the source.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

from tokenstream.engine.clock import Clock, LoopClock, TimerClock
from tokenstream.engine.events import ReplyEncoder, ReplyError, ReplyEvent, TextDelta
from tokenstream.engine.lateness import StreamCounters
from tokenstream.engine.pacer import PacingProfile, Schedule
from tokenstream.engine.tokenizer import IncrementalTokenizer, Piece, Tokenizer
from tokenstream.errors import UpstreamStreamError

__all__ = ["ArrivalBuffer", "LiveEvent", "LiveReply", "pace_live", "read_into"]

LiveEvent = Piece | ReplyEvent
"""What the live stage yields: timed pieces of text, and every other event in its place."""


@dataclass(slots=True)
class _Entry:
    item: LiveEvent
    arrived: float


@dataclass(slots=True)
class _Group:
    arrived: float
    tokens: int


READ_AHEAD_TOKENS = 4096
"""How many tokens the reader buffers ahead of the pacer before it stops reading (minutes of
reply at any realistic pace): an upstream faster than the pace is then held back by TCP
instead of filling memory."""


class ArrivalBuffer:
    """Pieces and other events in arrival order, with tokens counted per arrival time."""

    def __init__(self, read_ahead_tokens: int = READ_AHEAD_TOKENS) -> None:
        self._entries: deque[_Entry] = deque()
        self._groups: deque[_Group] = deque()  # tokens buffered per arrival time
        self.tokens = 0
        """Tokens buffered."""
        self.read_ahead_tokens = read_ahead_tokens
        self._room = asyncio.Event()
        self._room.set()
        self._wakeup = asyncio.Event()
        self._ended = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ended(self) -> bool:
        return self._ended

    def put(self, item: LiveEvent, arrived: float) -> None:
        self._entries.append(_Entry(item, arrived))
        if isinstance(item, Piece):
            if self._groups and self._groups[-1].arrived == arrived:
                self._groups[-1].tokens += item.tokens
            else:
                self._groups.append(_Group(arrived, item.tokens))
            self.tokens += item.tokens
            if self.tokens >= self.read_ahead_tokens:
                self._room.clear()
        self._wakeup.set()

    def end(self, error: BaseException | None = None) -> None:
        """No more items; ``error``, if any, is raised after the items before it are taken."""
        self._ended = True
        self._error = error
        self._wakeup.set()

    async def wait(self) -> bool:
        """True once an item is there; False at the end; raises the source's error at the end."""
        while not self._entries:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return False
            self._wakeup.clear()
            await self._wakeup.wait()
        return True

    def head(self) -> _Entry:
        return self._entries[0]

    def peek_chunk(self, chunk_tokens: int) -> tuple[Piece, float, int]:
        """The next event's piece (consecutive pieces up to ``chunk_tokens`` tokens), the time
        its last part arrived, and how many entries it takes."""
        first = self._entries[0]
        if not isinstance(first.item, Piece):
            raise TypeError("the buffer's head is not a piece")
        piece, arrived, count = first.item, first.arrived, 1
        if piece.tokens >= chunk_tokens:
            return piece, arrived, count
        texts, tokens = [piece.text], piece.tokens
        for entry in islice(self._entries, 1, None):
            if not isinstance(entry.item, Piece) or tokens >= chunk_tokens:
                break
            texts.append(entry.item.text)
            tokens += entry.item.tokens
            arrived = entry.arrived
            count += 1
        return Piece("".join(texts), tokens), arrived, count

    def drop(self, count: int) -> None:
        for _ in range(count):
            entry = self._entries.popleft()
            if isinstance(entry.item, Piece):
                group = self._groups[0]
                group.tokens -= entry.item.tokens
                self.tokens -= entry.item.tokens
                if group.tokens <= 0:
                    self._groups.popleft()
        if self.tokens < self.read_ahead_tokens:
            self._room.set()

    async def room(self) -> None:
        """Return once the buffer holds fewer than ``read_ahead_tokens`` tokens."""
        await self._room.wait()

    def backlog(self) -> Iterator[tuple[float, int]]:
        """``(arrived, tokens buffered up to and including that arrival)``, oldest first."""
        cumulative = 0
        for group in self._groups:
            cumulative += group.tokens
            yield group.arrived, cumulative


def _take(
    buffer: ArrivalBuffer, incremental: IncrementalTokenizer, item: ReplyEvent, arrived: float
) -> None:
    """One item of the source into ``buffer``: text tokenized, anything else after the text."""
    if isinstance(item, TextDelta):
        for piece in incremental.feed(item.text):
            buffer.put(piece, arrived)
    else:
        for piece in incremental.flush():
            buffer.put(piece, arrived)
        buffer.put(item, arrived)


def _end(
    buffer: ArrivalBuffer,
    incremental: IncrementalTokenizer,
    clock: Clock,
    error: BaseException | None = None,
) -> None:
    now = clock.now()
    for piece in incremental.flush():
        buffer.put(piece, now)
    if isinstance(error, UpstreamStreamError):  # the source's failure, in its place
        buffer.put(ReplyError(error.message, error.error_type, error.code), now)
        error = None
    buffer.end(error)


async def read_into(
    buffer: ArrivalBuffer,
    items: AsyncGenerator[ReplyEvent, None],
    tokenizer: Tokenizer,
    clock: Clock,
    *,
    incremental: IncrementalTokenizer | None = None,
    pending: tuple[str, float] | None = None,
) -> None:
    """The reader: the source's items, tokenized and stamped on arrival, into ``buffer``.

    ``incremental`` carries on the tokenizer state of items taken before (by ``pace_live``),
    and ``pending`` is the rest of the last text taken in part, with its arrival time.
    """
    if incremental is None:
        incremental = tokenizer.incremental()
    if pending is not None:
        _take(buffer, incremental, TextDelta(pending[0]), pending[1])
    try:
        async with aclosing(items) as arriving:
            async for item in arriving:
                _take(buffer, incremental, item, clock.now())
                await buffer.room()
    except Exception as exc:  # the consumer raises it after the text that came before it
        _end(buffer, incremental, clock, exc)
        return
    _end(buffer, incremental, clock)


_FIRST_SLICE = 32
"""Characters of a long text the first piece is looked for in before the rest is tokenized."""


async def pace_live(
    items: AsyncGenerator[ReplyEvent, None],
    tokenizer: Tokenizer,
    profile: PacingProfile,
    clock: Clock,
) -> AsyncGenerator[LiveEvent, None]:
    """Each piece at its deadline, every other event right after the pieces before it."""
    buffer = ArrivalBuffer()
    incremental = tokenizer.incremental()
    reader: asyncio.Task[None] | None = None
    # Until the first piece, items are taken here (see the module's docstring), and a long
    # text in slices: the first token is sent before the rest of a burst is tokenized.
    inline = profile.ttft_ms == 0 and profile.chunk_tokens == 1
    pending = ""  # the untokenized rest of the last text taken in part
    pending_arrived = 0.0
    if not inline:
        reader = asyncio.create_task(
            read_into(buffer, items, tokenizer, clock, incremental=incremental)
        )
    try:
        schedule = Schedule(profile, clock.now())
        catch_up = profile.max_buffer_ms is not None
        while True:
            if inline and not buffer and not buffer.ended:
                if pending:
                    text, arrived = pending, pending_arrived
                else:
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        _end(buffer, incremental, clock)
                        continue
                    except Exception as exc:  # raised after the text that came before it
                        _end(buffer, incremental, clock, exc)
                        continue
                    arrived = clock.now()
                    if not isinstance(item, TextDelta):
                        _take(buffer, incremental, item, arrived)
                        continue
                    text = item.text
                text, pending, pending_arrived = text[:_FIRST_SLICE], text[_FIRST_SLICE:], arrived
                _take(buffer, incremental, TextDelta(text), arrived)
                continue
            if not await buffer.wait():
                break
            head = buffer.head()
            if not isinstance(head.item, Piece):
                buffer.drop(1)
                yield head.item
                continue
            piece, arrived, count = buffer.peek_chunk(profile.chunk_tokens)
            deadline = schedule.next_deadline(
                piece, arrived, buffer.backlog() if catch_up else None
            )
            buffer.drop(count)
            await clock.sleep_until(deadline)
            yield piece
            if inline:  # the first piece is out: from here on, the reader takes what arrives
                inline = False
                if not buffer.ended:
                    reader = asyncio.create_task(read_into(
                        buffer, items, tokenizer, clock, incremental=incremental,
                        pending=(pending, pending_arrived) if pending else None,
                    ))
                    # let it take what is already there before the next deadline is
                    # computed, so that the catch-up rule sees the whole backlog
                    await asyncio.sleep(0)
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.wait([reader])
        await items.aclose()  # the reader's own, unless it never ran (or never existed)


class LiveReply:
    """A reply that arrives over time, re-paced as it comes (``starting.Reply``)."""

    __slots__ = ("_close", "_items", "clock", "profile", "stats", "tokenizer", "tokens")

    def __init__(
        self,
        items: AsyncGenerator[ReplyEvent, None],
        *,
        tokenizer: Tokenizer,
        profile: PacingProfile,
        clock: Clock,
        stats: StreamCounters,
        close: Callable[[], None],
    ) -> None:
        """``close`` lets go of the source (the upstream's connection)."""
        self._items = items
        self._close = close
        self.tokenizer = tokenizer
        self.profile = profile
        self.clock = clock
        self.stats = stats
        self.tokens = 0

    async def play(self, sse: Sender, encoder: ReplyEncoder) -> ReplyError | None:
        events = pace_live(self._items, self.tokenizer, self.profile, self.clock)
        try:
            async for event in events:
                if isinstance(event, Piece):
                    data = encoder.piece(event)
                    self.tokens += event.tokens
                elif isinstance(event, ReplyError):
                    return event
                else:
                    data = encoder.event(event)
                if data:
                    await sse.send(data)
                    self.stats.events_sent += 1
        finally:
            await events.aclose()
        return None

    @property
    def watch_clock(self) -> TimerClock:
        return LoopClock()

    def closing_events(self) -> list[ReplyEvent]:
        return []  # the source's own finish and usage were played in their places

    async def aclose(self) -> None:
        self._close()


class Sender(Protocol):
    async def send(self, data: bytes) -> None: ...
