"""The request journal shared by every process using one Redis (``journal.JournalShare``).

Entries are the list ``<prefix>:journal``, oldest first, each ``<id>\\t<JSON>``: one script
numbers an entry (``<prefix>:journal:n``), appends it and trims the list to
``control.max_journal_entries``. A request's entry is queued when it ends and written by
one task with whatever else was queued meanwhile; a read first writes this process's queue.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from tokenstream.server.redis_store import RedisStore, StoreErrors

__all__ = ["RedisJournal"]

_APPEND = """
local n = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[1], n .. '\\t' .. ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return n
"""


class RedisJournal:
    def __init__(self, store: RedisStore, max_entries: int) -> None:
        self.store = store
        self.max_entries = max_entries
        self.key = store.key("journal")
        self._numbers = store.key("journal", "n")
        self._queued: list[str] = []
        self._writing: asyncio.Task[None] | None = None

    def push(self, entry: dict[str, Any]) -> None:
        if not self.store.available:
            return
        self._queued.append(json.dumps(entry, ensure_ascii=False))
        if self._writing is None:
            self._writing = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        try:
            while self._queued:
                queued, self._queued = self._queued, []
                pipeline = self.store.redis.pipeline(transaction=False)
                for entry in queued:
                    pipeline.eval(_APPEND, 2, self.key, self._numbers, entry, self.max_entries)
                try:
                    await pipeline.execute()
                except StoreErrors as exc:
                    self.store.failed(exc)
                    self._queued.clear()
        finally:
            self._writing = None

    async def _written(self) -> None:
        """This process's queued entries are in the store."""
        if self._writing is not None:
            await asyncio.shield(self._writing)

    async def _all(self) -> list[bytes]:
        return cast(list[bytes], await self.store.redis.lrange(self.key, 0, -1))

    async def entries(self, test_id: str | None, limit: int | None
                      ) -> list[dict[str, Any]] | None:
        if not self.store.available:
            return None
        try:
            await self._written()
            raw = await self._all()
        except StoreErrors as exc:
            self.store.failed(exc)
            return None
        chosen = [entry for entry in map(_parsed, raw)
                  if test_id is None or entry["test_id"] == test_id]
        if limit is not None:
            chosen = chosen[len(chosen) - limit:] if limit else []
        return chosen

    async def clear(self, test_id: str | None) -> int | None:
        if not self.store.available:
            return None
        try:
            await self._written()
            if test_id is None:
                pipeline = self.store.redis.pipeline(transaction=False)
                pipeline.llen(self.key)
                pipeline.delete(self.key)
                count, _ = await pipeline.execute()
                return int(count)
            ours = [item for item in await self._all() if _parsed(item)["test_id"] == test_id]
            if ours:
                pipeline = self.store.redis.pipeline(transaction=False)
                for item in ours:
                    pipeline.lrem(self.key, 1, item.decode())
                await pipeline.execute()
            return len(ours)
        except StoreErrors as exc:
            self.store.failed(exc)
            return None


def _parsed(item: bytes) -> dict[str, Any]:
    number, _, text = item.partition(b"\t")
    return {"id": int(number), **json.loads(text)}
