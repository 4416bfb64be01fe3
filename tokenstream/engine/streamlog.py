"""Stream logs: every streamed reply's id, and the events of a resumable one, kept for a while.

Every streamed reply gets a stream id, and its encoder numbers its events with the log's
``ids`` (``sse.ids.EventIds``: each event begins with ``id: <stream id>:<sequence>``). A
resumable reply's writes are kept in its ``StreamLog`` as they go out (``append``, from
``resume.ResumableFeed``) until ``ttl_s`` after it ended, so that a client that reconnects
with the last id it saw gets every event after it. A reply that is not resumable keeps no
events: its log only says that it existed, so that a reconnect to it is told to stop (204)
rather than getting the reply restarted.

``StreamLogStore`` is what the runner needs of a store; ``MemoryStreamLogs`` keeps the logs
in this process, bounded in number (the oldest finished log goes first), in events and bytes
per stream (the oldest writes go first: a reconnect that would need them is refused), and in
bytes all together (``LogBudget``: finished logs go first, then the oldest running ones'
writes).
"""

from __future__ import annotations

import logging
import secrets
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Protocol

from tokenstream.engine.clock import Clock
from tokenstream.sse.ids import EventIds
from tokenstream.sse.transport import SSEResponse

__all__ = [
    "STREAM_ID_HEADER",
    "LogBudget",
    "MemoryStreamLogs",
    "StreamLog",
    "StreamLogStore",
    "parse_event_id",
]

STREAM_ID_HEADER = "X-Tokenstream-Stream-Id"

log = logging.getLogger("tokenstream.resume")


def parse_event_id(value: str) -> tuple[str, int] | None:
    """``<stream id>:<sequence>`` as (stream id, sequence); None if it is not one of ours."""
    stream_id, colon, sequence = value.rpartition(":")
    if not colon or not stream_id or not sequence.isdigit() or len(sequence) > 18:
        return None
    return stream_id, int(sequence)


class LiveFeed(Protocol):
    """Where a reply being made in this process is read (``resume.ResumableFeed``)."""

    async def serve(self, sse: SSEResponse, after: int) -> None: ...


class LogBudget:
    """The bytes every log of a store keeps, together, and what to do when they are too many
    (``shed``: called with the bytes over ``limit``)."""

    __slots__ = ("limit", "shed", "used")

    def __init__(self, limit: int, shed: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.shed = shed


class StreamLog:
    """One stream's id, and the events of a resumable one (numbered from 1), kept as the
    writes that sent them."""

    __slots__ = ("_budget", "_max_bytes", "_max_events", "_on_finish", "chat_id", "ended_at",
                 "feed", "first_kept", "headers", "ids", "kept_bytes", "last_seq", "mirror",
                 "resumable", "stream_id", "write_ends", "writes")

    def __init__(
        self,
        stream_id: str,
        *,
        resumable: bool,
        max_events: int,
        max_bytes: int,
        chat_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        budget: LogBudget | None = None,
        on_finish: Callable[[StreamLog], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.ids = EventIds(stream_id)
        """The encoder's numbering of the stream's events."""
        self._budget = budget
        self._on_finish = on_finish
        self.resumable = resumable
        self.chat_id = chat_id
        self.headers = dict(headers or {})
        """The reply's own response headers (a dialect's), for a reconnect's response."""
        self._max_events = max_events
        self._max_bytes = max_bytes
        self.writes: list[bytes] = []
        """The writes kept, each one or more whole events, oldest first."""
        self.write_ends: list[int] = []
        """The sequence of each kept write's last event."""
        self.first_kept = 1
        """The sequence of the first event kept: older writes were dropped to stay in bounds."""
        self.kept_bytes = 0
        self.last_seq = 0
        """The sequence of the last event kept."""
        self.ended_at: float | None = None
        self.feed: LiveFeed | None = None
        """While its reply is being made here (or elsewhere, read from a shared store):
        where a reconnect reads it."""
        self.mirror: Callable[[StreamLog], None] | None = None
        """Told of every new write and of the end, when a shared store copies the log (it
        only notes that there is something to copy: no I/O here)."""

    @property
    def finished(self) -> bool:
        return self.ended_at is not None

    def append(self, data: bytes) -> None:
        """A write of whole events, the last ones the encoder numbered (``ids.last`` is the
        last one's sequence). The bounds are kept write by write: the newest is always kept."""
        seq = self.last_seq = self.ids.last
        if not self.resumable:
            return
        if self.mirror is not None:
            self.mirror(self)
        self.writes.append(data)
        self.write_ends.append(seq)
        size = len(data)
        self.kept_bytes += size
        if seq - self.first_kept >= self._max_events or self.kept_bytes > self._max_bytes:
            self.drop_oldest(seq - self.first_kept + 1 - self._max_events,
                             self.kept_bytes - self._max_bytes)
        budget = self._budget
        if budget is not None:
            budget.used += size
            if budget.used > budget.limit and budget.shed is not None:
                budget.shed(budget.used - budget.limit)

    def drop_oldest(self, events: int, size: int) -> int:
        """Drop the oldest writes kept, until at least ``events`` events and ``size`` bytes are
        gone (the newest write stays); the bytes dropped."""
        writes, ends = self.writes, self.write_ends
        dropped_events = dropped_bytes = dropped = 0
        while dropped < len(writes) - 1 and (dropped_events < events or dropped_bytes < size):
            dropped_bytes += len(writes[dropped])
            dropped_events = ends[dropped] - self.first_kept + 1
            dropped += 1
        if dropped:
            self.first_kept = ends[dropped - 1] + 1
            del writes[:dropped], ends[:dropped]
            self.kept_bytes -= dropped_bytes
            if self._budget is not None:
                self._budget.used -= dropped_bytes
        return dropped_bytes

    def forget(self) -> None:
        """Drop every event kept (the log leaves its store)."""
        if self._budget is not None:
            self._budget.used -= self.kept_bytes
        self.first_kept = self.last_seq + 1
        self.writes.clear()
        self.write_ends.clear()
        self.kept_bytes = 0

    def has_after(self, seq: int) -> bool:
        """Whether every event after ``seq`` is still kept (none missing between)."""
        return self.resumable and self.first_kept - 1 <= seq <= self.last_seq

    def after(self, seq: int) -> bytes:
        """The events after ``seq``, as one write (``has_after(seq)`` must hold)."""
        ends = self.write_ends
        first = bisect_right(ends, seq)  # the first write with an event after seq
        if first == len(ends):
            return b""
        if seq < self._first_of(first):
            return b"".join(self.writes[first:])  # seq ends a write (the usual case)
        # a reconnect in the middle of a write: that write's events after seq, then the rest
        rest = b"".join(event for n, event in self._events_of(first) if n > seq)
        return rest + b"".join(self.writes[first + 1:])

    def events_after(self, seq: int) -> list[tuple[int, bytes]]:
        """The events after ``seq`` one by one, each with its sequence (for a shared store's
        copy: ``has_after(seq)`` need not hold, what is kept of them is given)."""
        first = bisect_right(self.write_ends, seq)
        return [
            (n, event) for index in range(first, len(self.writes))
            for n, event in self._events_of(index) if n > seq
        ]

    def _first_of(self, index: int) -> int:
        """The sequence of the first event of kept write ``index``."""
        return self.write_ends[index - 1] + 1 if index else self.first_kept

    def _events_of(self, index: int) -> list[tuple[int, bytes]]:
        """The events of kept write ``index``, each with its sequence."""
        end = self.write_ends[index]
        if end == self._first_of(index):  # one event (a paced write): nothing to split
            return [(end, self.writes[index])]
        return self.ids.split(self.writes[index])

    def finish(self, now: float) -> None:
        if self.ended_at is None:
            self.ended_at = now
            if self._on_finish is not None:
                self._on_finish(self)
            if self.mirror is not None:
                self.mirror(self)


class StreamLogStore(Protocol):
    """Where stream logs live: this process's memory (``MemoryStreamLogs``); a shared store
    (Redis) keeps the same operations."""

    def open(
        self, *, resumable: bool, chat_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> StreamLog:
        """A new stream's log, under a new stream id."""
        ...

    async def find(self, stream_id: str) -> StreamLog | None:
        """The log of ``stream_id``; None when unknown or expired."""
        ...

    async def find_chat(self, chat_id: str) -> StreamLog | None:
        """The newest stream of the AI SDK chat ``chat_id``, if it still runs."""
        ...

    async def read_elsewhere(self, stream_id: str) -> bool:
        """Whether a reader in another process (of a shared store) is attached to the
        stream: its reply must not be given up yet."""
        ...


class MemoryStreamLogs:
    """Stream logs in this process: at most ``max_streams``, each kept until ``ttl_s`` after
    its stream ended, holding ``max_bytes`` at most all together."""

    def __init__(
        self, clock: Clock, *, ttl_s: float, max_streams: int, max_events_per_stream: int,
        max_bytes_per_stream: int, max_bytes: int,
    ) -> None:
        self._clock = clock
        self.ttl_s = ttl_s
        self.max_streams = max_streams
        self.max_events = max_events_per_stream
        self.max_bytes = max_bytes_per_stream
        self._logs: OrderedDict[str, StreamLog] = OrderedDict()  # oldest first
        self._chats: dict[str, StreamLog] = {}
        self._ended: deque[StreamLog] = deque()
        """Finished logs in the order they ended (some may have been dropped since)."""
        self.budget = LogBudget(max_bytes, self._shed)
        self._warned = False

    def __len__(self) -> int:
        return len(self._logs)

    def open(
        self, *, resumable: bool, chat_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> StreamLog:
        self._expire()
        while len(self._logs) >= self.max_streams:
            self._drop(self._oldest_finished() or next(iter(self._logs)))
        log = StreamLog(
            secrets.token_urlsafe(12), resumable=resumable, max_events=self.max_events,
            max_bytes=self.max_bytes, chat_id=chat_id, headers=headers, budget=self.budget,
            on_finish=self._ended.append,
        )
        self._logs[log.stream_id] = log
        if chat_id is not None:
            self._chats[chat_id] = log
        return log

    def get(self, stream_id: str) -> StreamLog | None:
        self._expire()
        return self._logs.get(stream_id)

    def for_chat(self, chat_id: str) -> StreamLog | None:
        self._expire()
        log = self._chats.get(chat_id)
        return None if log is None or log.finished else log

    async def find(self, stream_id: str) -> StreamLog | None:
        return self.get(stream_id)

    async def find_chat(self, chat_id: str) -> StreamLog | None:
        return self.for_chat(chat_id)

    async def read_elsewhere(self, stream_id: str) -> bool:
        return False

    def _shed(self, over: int) -> None:
        """Over the byte budget: finished logs go, the first ended first, then the oldest
        running logs' oldest events (a reconnect that needs them gets 404), down to 7/8 of
        the budget so that shedding is rare."""
        if not self._warned:
            self._warned = True
            log.warning(
                "The resumable streams' logs reached resume.max_bytes (%d bytes): the oldest "
                "are dropped, and reconnects that need them get 404.", self.budget.limit,
            )
        over += self.budget.limit // 8
        while over > 0 and (stream_id := self._oldest_finished()) is not None:
            over -= self._logs[stream_id].kept_bytes
            self._drop(stream_id)
        for kept in list(self._logs.values()):
            if over <= 0:
                return
            over -= kept.drop_oldest(0, over)

    def _expired(self, log: StreamLog, now: float) -> bool:
        return log.ended_at is not None and now - log.ended_at >= self.ttl_s

    def _expire(self) -> None:
        now = self._clock.now()
        ended = self._ended
        while ended and self._expired(ended[0], now):
            expired = ended.popleft()
            if self._logs.get(expired.stream_id) is expired:
                self._drop(expired.stream_id)

    def _oldest_finished(self) -> str | None:
        """The log that ended first of those still kept."""
        ended = self._ended
        while ended and self._logs.get(ended[0].stream_id) is not ended[0]:
            ended.popleft()  # dropped already
        return ended[0].stream_id if ended else None

    def _drop(self, stream_id: str) -> None:
        dropped = self._logs.pop(stream_id)
        dropped.forget()
        if dropped.chat_id is not None and self._chats.get(dropped.chat_id) is dropped:
            del self._chats[dropped.chat_id]
