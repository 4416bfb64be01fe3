"""Stream logs: every streamed reply's id, and the events of a resumable one, kept for a while.

Every streamed reply gets a stream id and numbers its events (``StampedEncoder``: each
event gets the line ``id: <stream id>:<sequence>``). A resumable reply's events are kept in
its ``StreamLog`` until ``ttl_s`` after it ended, so that a client that reconnects with the
last id it saw gets every event after it (``resume.ResumableFeed``). A reply that is not
resumable keeps no events: its log only says that it existed, so that a reconnect to it is
told to stop (204) rather than getting the reply restarted.

``StreamLogStore`` is what the runner needs of a store; ``MemoryStreamLogs`` keeps the logs
in this process, bounded in number (the oldest finished log goes first), in events and bytes
per stream (the oldest events go first: a reconnect that would need them is refused), and in
bytes all together (``LogBudget``: finished logs go first, then the oldest running ones'
events).
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Protocol

from tokenstream.engine.clock import Clock
from tokenstream.engine.events import ReplyEncoder, ReplyEvent
from tokenstream.engine.tokenizer import Piece
from tokenstream.sse.transport import SSEResponse

__all__ = [
    "STREAM_ID_HEADER",
    "LogBudget",
    "MemoryStreamLogs",
    "StampedEncoder",
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
    """One stream's id, and the events of a resumable one (numbered from 1)."""

    __slots__ = ("_budget", "_max_bytes", "_max_events", "_on_finish", "chat_id", "ended_at",
                 "events", "feed", "first_kept", "headers", "kept_bytes", "last_seq", "mirror",
                 "resumable", "stream_id")

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
        self._budget = budget
        self._on_finish = on_finish
        self.resumable = resumable
        self.chat_id = chat_id
        self.headers = dict(headers or {})
        """The reply's own response headers (a dialect's), for a reconnect's response."""
        self._max_events = max_events
        self._max_bytes = max_bytes
        self.events: list[bytes] = []
        self.first_kept = 1
        """The sequence of ``events[0]``: older events were dropped to stay in bounds."""
        self.kept_bytes = 0
        self.last_seq = 0
        self.ended_at: float | None = None
        self.feed: LiveFeed | None = None
        """While its reply is being made here (or elsewhere, read from a shared store):
        where a reconnect reads it."""
        self.mirror: Callable[[StreamLog], None] | None = None
        """Told of every new event and of the end, when a shared store copies the log (it
        only notes that there is something to copy: no I/O here)."""

    @property
    def finished(self) -> bool:
        return self.ended_at is not None

    def append(self, event: bytes) -> None:
        """The next event (its bytes with their ``id:`` line)."""
        self.last_seq += 1
        if not self.resumable:
            return
        if self.mirror is not None:
            self.mirror(self)
        events = self.events
        events.append(event)
        size = len(event)
        self.kept_bytes += size
        if len(events) > self._max_events or self.kept_bytes > self._max_bytes:
            self.drop_oldest(len(events) - self._max_events, self.kept_bytes - self._max_bytes)
        budget = self._budget
        if budget is not None:
            budget.used += size
            if budget.used > budget.limit and budget.shed is not None:
                budget.shed(budget.used - budget.limit)

    def drop_oldest(self, events: int, size: int) -> int:
        """Drop at least ``events`` of the oldest events kept and at least ``size`` bytes of
        them (keeping the newest one unless ``events`` says otherwise); the bytes dropped."""
        kept = self.events
        dropped_bytes = dropped = 0
        while kept and (dropped < events or (dropped_bytes < size and len(kept) - dropped > 1)):
            dropped_bytes += len(kept[dropped])
            dropped += 1
        if dropped:
            del kept[:dropped]
            self.first_kept += dropped
            self.kept_bytes -= dropped_bytes
            if self._budget is not None:
                self._budget.used -= dropped_bytes
        return dropped_bytes

    def forget(self) -> None:
        """Drop every event kept (the log leaves its store)."""
        if self._budget is not None:
            self._budget.used -= self.kept_bytes
        self.first_kept += len(self.events)
        self.events.clear()
        self.kept_bytes = 0

    def has_after(self, seq: int) -> bool:
        """Whether every event after ``seq`` is still kept (none missing between)."""
        return self.resumable and self.first_kept - 1 <= seq <= self.last_seq

    def after(self, seq: int) -> bytes:
        """The events after ``seq``, as one write (``has_after(seq)`` must hold)."""
        return b"".join(self.events[seq - self.first_kept + 1:])

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


def _one_event(data: bytes) -> bool:
    """Whether ``data`` (whole events, the last closed by a blank line) is one event.

    Most events are one JSON ``data:`` line, maybe after an ``event:`` line: two searches
    for a line break (``memchr``) tell, where a search for the two-byte blank line costs
    twice as much on a 200-byte event."""
    end = len(data) - 2
    first = data.find(b"\n")
    if first == end:
        return True
    second = data.find(b"\n", first + 1)
    if second == first + 1:  # a blank line before the last one
        return False
    return second == end or data.find(b"\n\n", second) == end


class StampedEncoder:
    """A dialect's encoder whose every event is numbered, gets the line ``id: <stream
    id>:<sequence>`` and goes into the stream's log (``engine.events.ReplyEncoder``). An
    encoder's output is a run of whole events, each closed by a blank line."""

    __slots__ = ("_id_prefix", "_inner", "_log")

    def __init__(self, inner: ReplyEncoder, log: StreamLog) -> None:
        self._inner = inner
        self._log = log
        self._id_prefix = b"id: " + log.stream_id.encode() + b":"

    def piece(self, piece: Piece) -> bytes:
        return self._stamped(self._inner.piece(piece))

    def event(self, event: ReplyEvent) -> bytes:
        return self._stamped(self._inner.event(event))

    def end(self) -> bytes:
        return self._stamped(self._inner.end())

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        return self._stamped(self._inner.error(message, error_type, code))

    def _stamped(self, data: bytes) -> bytes:
        if not data:
            return data
        log = self._log
        if _one_event(data):  # the hot path
            out = b"%b%d\n%b" % (self._id_prefix, log.last_seq + 1, data)
            if log.resumable:
                log.append(out)
            else:
                log.last_seq += 1
            return out
        stamped: list[bytes] = []
        *events, rest = data.split(b"\n\n")
        for event in events:
            one = b"%b%d\n%b\n\n" % (self._id_prefix, log.last_seq + 1, event)
            log.append(one)
            stamped.append(one)
        stamped.append(rest)  # (nothing, from an encoder)
        return b"".join(stamped)
