"""Stream logs shared through Redis Streams: a reconnect may land on any worker or machine.

The process that makes a reply keeps its ``StreamLog`` and ``ResumableFeed`` as with the
memory store (its readers never wait on Redis); its events are copied to Redis off that path
by one writer task per process: a log with something new only marks itself (``_mark``), and
the writer sends what every marked log gained since its last write in one pipeline, then
waits for more. Keys (``store_prefix`` first):

    <prefix>:m:<stream id>   hash: resumable, headers (JSON), chat, owner, finished, last
    <prefix>:s:<stream id>   stream: event <seq> is entry ``0-<seq>`` {e: bytes}; the end
                             of the reply is entry ``1-0`` {end: last seq}; MAXLEN ~
                             resume.max_events_per_stream, and XTRIM MINID (exact) to
                             keep resume.max_bytes_per_stream at most (the newest event
                             is always kept)
    <prefix>:c:<chat id>     the chat's newest stream id (the AI SDK's resume)
    <prefix>:r:<stream id>   set while a reader in another process follows the stream

While a reply runs its keys expire ``RUNNING_EXPIRY_S`` after the owner's last refresh (its
process died: they go); once it ended, ``resume.ttl_s`` after the end.

A process asked for a stream it does not make (``find``) reads the metadata; a reader then
gets what it missed and follows with ``XREAD BLOCK`` until the end entry (``RemoteFeed``).
If the owner stops refreshing its ``alive`` key without writing the end, the reader ends
the body. If Redis fails, the streams being mirrored go on without it (their keys are
deleted once Redis is back, so that a reconnect elsewhere gets 404, not half a reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from aiohttp import web
from redis.asyncio.client import Pipeline

from tokenstream.engine.clock import TimerClock
from tokenstream.engine.streamlog import MemoryStreamLogs, StreamLog
from tokenstream.server.background import in_background
from tokenstream.server.redis_store import RedisStore, StoreErrors
from tokenstream.sse.transport import PING, ClientGone, ClientStalled, SSEResponse

__all__ = ["RUNNING_EXPIRY_S", "RedisStreamLogs", "RemoteFeed"]

RUNNING_EXPIRY_S = 60
"""A running reply's keys live this long after the owner last refreshed them."""
_EXPIRY_REFRESH_EVERY = 20
"""Refreshes of the owner's alive key (about one a second) per refresh of its keys' expiry."""
BLOCK_MS = 1000
"""A remote reader's longest wait for new events before it checks the owner."""
READER_TTL_MS = 3000
END_ID = b"1-0"


class _Copy:
    """A log being copied: what the writer sent of it, and which of its events Redis still
    holds."""

    __slots__ = ("kept", "kept_bytes", "log", "sent")

    def __init__(self, log: StreamLog) -> None:
        self.log = log
        self.sent = -1
        """The last sequence written (-1: not even the stream's metadata)."""
        self.kept: deque[tuple[int, int]] = deque()
        """(sequence, size) of each event in Redis, oldest first."""
        self.kept_bytes = 0


class RemoteLog(StreamLog):
    """What the store says of a stream made in another process."""

    __slots__ = ("owner",)

    def __init__(self, stream_id: str, meta: Mapping[bytes, bytes], first_kept: int) -> None:
        super().__init__(
            stream_id, resumable=meta.get(b"resumable") == b"1", max_events=0, max_bytes=0,
            chat_id=(meta.get(b"chat") or b"").decode() or None,
            headers=json.loads(meta.get(b"headers") or b"{}"),
        )
        self.owner = (meta.get(b"owner") or b"").decode()
        self.last_seq = int(meta.get(b"last") or 0)
        self.first_kept = first_kept
        if meta.get(b"finished") == b"1":
            self.ended_at = 0.0

    def has_after(self, seq: int) -> bool:
        # a running reply's metadata lags its events: a reader may have seen newer ones
        if self.finished:
            return super().has_after(seq)
        return self.resumable and self.first_kept - 1 <= seq


class RedisStreamLogs:
    """``StreamLogStore`` over this process's ``MemoryStreamLogs`` and Redis."""

    def __init__(
        self, local: MemoryStreamLogs, store: RedisStore, clock: TimerClock, *,
        heartbeat_s: float | None,
    ) -> None:
        self.local = local
        self.store = store
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.ttl_s = max(1, round(local.ttl_s))
        self.max_events = local.max_events
        self.max_bytes = local.max_bytes
        self._mirrored: dict[str, _Copy] = {}
        """Logs being copied, by stream id, until their end is written."""
        self._marked: set[str] = set()
        self._abandoned: list[str] = []
        """Streams whose copy stopped when Redis failed: their keys go once it is back."""
        self._wake = asyncio.Event()
        self._refreshes = 0
        store.every_refresh(self._refresh_expiry)

    def __len__(self) -> int:
        return len(self.local)

    def get(self, stream_id: str) -> StreamLog | None:
        return self.local.get(stream_id)

    def open(
        self, *, resumable: bool, chat_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> StreamLog:
        log = self.local.open(resumable=resumable, chat_id=chat_id, headers=headers)
        if self.store.available:
            self._mirrored[log.stream_id] = _Copy(log)
            log.mirror = self._mark
            self._mark(log)
        return log

    def _mark(self, log: StreamLog) -> None:
        """(On the hot path: no I/O.)"""
        self._marked.add(log.stream_id)
        if not self._wake.is_set():
            self._wake.set()

    # -- the writer ----------------------------------------------------------------------------

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        try:
            async with in_background(self._write_continually()):
                yield
        finally:
            if self._marked and self.store.available:
                await self.flush()

    async def _write_continually(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what every marked log gained, in one pipeline."""
        marked, self._marked = self._marked, set()
        if not self.store.available:
            self._stop_mirroring()
            return
        pipeline = self.store.redis.pipeline(transaction=False)
        for stream_id in marked:
            copy = self._mirrored.get(stream_id)
            if copy is not None:
                self._write(pipeline, copy)
        self._forget_abandoned(pipeline)
        try:
            await pipeline.execute()
        except StoreErrors as exc:
            self.store.failed(exc)
            self._stop_mirroring()

    def _write(self, pipeline: Pipeline, copy: _Copy) -> None:
        log = copy.log
        stream_id = log.stream_id
        meta, stream = self.store.key("m", stream_id), self.store.key("s", stream_id)
        sent = copy.sent
        if sent < 0:
            pipeline.hset(meta, mapping={
                "resumable": int(log.resumable), "headers": json.dumps(log.headers),
                "chat": log.chat_id or "", "owner": self.store.process, "finished": 0,
                "last": 0,
            })
            pipeline.expire(meta, RUNNING_EXPIRY_S)
            if log.chat_id is not None:
                pipeline.set(self.store.key("c", log.chat_id), stream_id, ex=RUNNING_EXPIRY_S)
            sent = 0
        if log.resumable and log.last_seq > sent:
            for seq, event in log.events_after(sent):
                pipeline.xadd(stream, {"e": event}, id=f"0-{seq}",
                              maxlen=self.max_events, approximate=True)
                copy.kept.append((seq, len(event)))
                copy.kept_bytes += len(event)
            first_kept = self._bound(copy)
            if first_kept is not None:
                pipeline.xtrim(stream, minid=f"0-{first_kept}", approximate=False)
            if sent == 0:
                pipeline.expire(stream, RUNNING_EXPIRY_S)
        copy.sent = log.last_seq
        if log.finished:
            if log.resumable:
                pipeline.xadd(stream, {"end": log.last_seq}, id=END_ID)
                pipeline.expire(stream, self.ttl_s)
            pipeline.hset(meta, mapping={"finished": 1, "last": log.last_seq})
            pipeline.expire(meta, self.ttl_s)
            if log.chat_id is not None:
                pipeline.expire(self.store.key("c", log.chat_id), self.ttl_s)
            log.mirror = None
            del self._mirrored[stream_id]

    def _bound(self, copy: _Copy) -> int | None:
        """Forget the oldest events over the bounds (the newest stays); the first sequence
        Redis must keep if it holds more bytes than ``max_bytes``, else None."""
        kept = copy.kept
        # XADD's MAXLEN ~ drops these (approximately: a few may stay until the next XTRIM)
        while len(kept) > self.max_events:
            copy.kept_bytes -= kept.popleft()[1]
        if copy.kept_bytes <= self.max_bytes or len(kept) == 1:
            return None
        while copy.kept_bytes > self.max_bytes and len(kept) > 1:
            copy.kept_bytes -= kept.popleft()[1]
        return kept[0][0]

    def _stop_mirroring(self) -> None:
        for copy in self._mirrored.values():
            copy.log.mirror = None
        self._abandoned.extend(self._mirrored)
        self._mirrored.clear()
        self._marked.clear()

    def _forget_abandoned(self, pipeline: Pipeline) -> None:
        if self._abandoned:
            for stream_id in self._abandoned:
                pipeline.delete(self.store.key("m", stream_id), self.store.key("s", stream_id))
            self._abandoned = []

    def _refresh_expiry(self, pipeline: Pipeline) -> None:
        """(Every store refresh.) The running replies' keys live on while their owner does."""
        self._forget_abandoned(pipeline)
        self._refreshes += 1
        if self._refreshes % _EXPIRY_REFRESH_EVERY:
            return
        for stream_id, copy in self._mirrored.items():
            pipeline.expire(self.store.key("m", stream_id), RUNNING_EXPIRY_S)
            pipeline.expire(self.store.key("s", stream_id), RUNNING_EXPIRY_S)
            if copy.log.chat_id is not None:
                pipeline.expire(self.store.key("c", copy.log.chat_id), RUNNING_EXPIRY_S)

    # -- the readers ---------------------------------------------------------------------------

    async def find(self, stream_id: str) -> StreamLog | None:
        local = self.local.get(stream_id)
        if local is not None or not self.store.available:
            return local
        pipeline = self.store.redis.pipeline(transaction=False)
        pipeline.hgetall(self.store.key("m", stream_id))
        pipeline.xrange(self.store.key("s", stream_id), "-", "+", count=1)
        try:
            meta, first = await pipeline.execute()
        except StoreErrors as exc:
            self.store.failed(exc)
            return None
        if not meta:
            return None
        first_kept = 1
        if first and first[0][0] != END_ID:
            first_kept = int(first[0][0].partition(b"-")[2])
        elif first:  # (only the end is left)
            first_kept = int(meta.get(b"last") or 0) + 1
        log = RemoteLog(stream_id, meta, first_kept)
        if log.resumable:
            log.feed = RemoteFeed(self, log)
        return log

    async def find_chat(self, chat_id: str) -> StreamLog | None:
        local = self.local.for_chat(chat_id)
        if local is not None or not self.store.available:
            return local
        try:
            stream_id = cast(bytes | None, await self.store.redis.get(self.store.key("c", chat_id)))
        except StoreErrors as exc:
            self.store.failed(exc)
            return None
        if stream_id is None:
            return None
        log = await self.find(stream_id.decode())
        return None if log is None or log.finished else log

    async def read_elsewhere(self, stream_id: str) -> bool:
        if not self.store.available:
            return False
        try:
            return bool(await self.store.redis.exists(self.store.key("r", stream_id)))
        except StoreErrors as exc:
            self.store.failed(exc)
            return False


class RemoteFeed:
    """A reader of a stream made in another process (``streamlog.LiveFeed``)."""

    __slots__ = ("_log", "_logs")

    def __init__(self, logs: RedisStreamLogs, log: RemoteLog) -> None:
        self._logs = logs
        self._log = log

    async def serve(self, sse: SSEResponse, after: int) -> None:
        """Every event after ``after``, then each as the owner writes it, to the end entry;
        the body ends early if the owner died, and the connection is reset if Redis failed
        or events are missing."""
        try:
            await self._follow(sse, after)
        except ClientStalled:
            self._logs.store.stats.stalled += 1
            sse.abort()
        except ClientGone:
            pass
        except StoreErrors as exc:
            self._logs.store.failed(exc)
            sse.reset()
        finally:
            sse.release()
            if not self._log.finished:
                with contextlib.suppress(*StoreErrors):
                    await self._logs.store.redis.delete(
                        self._logs.store.key("r", self._log.stream_id)
                    )

    async def _follow(self, sse: SSEResponse, after: int) -> None:
        logs, log = self._logs, self._log
        store, clock = logs.store, logs.clock
        redis = store.redis
        stream = store.key("s", log.stream_id)
        reader_key = store.key("r", log.stream_id)
        delivered = after
        marked_at = -float("inf")
        while True:
            now = clock.now()
            if not log.finished and now - marked_at >= READER_TTL_MS / 3000:
                await redis.set(reader_key, b"1", px=READER_TTL_MS)
                marked_at = now
            got: Any = await redis.xread({stream: f"0-{delivered}"}, block=BLOCK_MS)
            entries = got[0][1] if got else []
            if not entries:
                if not await self._owner_alive():
                    await sse.close()  # it will never end: the body ends here
                    return
                heartbeat = logs.heartbeat_s
                if heartbeat is not None and clock.now() - sse.last_write >= heartbeat:
                    sse.write_nowait(PING)
                if sse.request.transport is None or sse.request.transport.is_closing():
                    return
                continue
            data: list[bytes] = []
            for entry_id, fields in entries:
                if entry_id == END_ID:
                    log.ended_at = clock.now()
                    await sse.close(b"".join(data))
                    return
                seq = int(entry_id.partition(b"-")[2])
                if seq != delivered + 1:  # trimmed, or not copied (Redis was lost a while)
                    if data:
                        await sse.send(b"".join(data))
                    sse.reset()
                    return
                data.append(fields[b"e"])
                delivered = seq
            await sse.send(b"".join(data))

    async def _owner_alive(self) -> bool:
        store = self._logs.store
        pipeline = store.redis.pipeline(transaction=False)
        pipeline.exists(store.key("alive", self._log.owner))
        pipeline.exists(store.key("m", self._log.stream_id))
        owner, meta = await pipeline.execute()
        return bool(owner and meta)
