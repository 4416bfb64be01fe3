"""``server.max_concurrent_streams`` shared by every process using one Redis.

Every running stream holds a lease: a member of the sorted set ``<prefix>:leases`` scored
by when it expires. Admission is one script (one round trip): drop the expired leases, then
take one if fewer than the limit are held. Each process pushes its own leases' expiry on at
every store refresh, so a process that dies stops holding its leases ``LEASE_TTL_MS``
later. The per-client limit (``server.max_streams_per_client``) stays per process.
"""

from __future__ import annotations

import asyncio

from redis.asyncio.client import Pipeline

from tokenstream.server.redis_store import RedisStore, StoreErrors

__all__ = ["LEASE_TTL_MS", "RedisLimit"]

LEASE_TTL_MS = 10_000

_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""

_EXTEND = """
local now = redis.call('TIME')
local until_ms = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 0
"""


class RedisLimit:
    """``registry.SharedLimit`` in Redis."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.key = store.key("leases")
        self._held: set[str] = set()
        self._acquire = store.redis.register_script(_ACQUIRE)
        self._releasing: set[asyncio.Task[None]] = set()
        store.every_refresh(self._refresh)

    def _member(self, lease: int) -> str:
        return f"{self.store.process}:{lease}"

    async def acquire(self, lease: int, limit: int) -> bool | None:
        if not self.store.available:
            return None
        member = self._member(lease)
        try:
            taken = await self._acquire(keys=[self.key], args=[limit, LEASE_TTL_MS, member])
        except StoreErrors as exc:
            self.store.failed(exc)
            return None
        if taken:
            self._held.add(member)
        return bool(taken)

    def release(self, lease: int) -> None:
        member = self._member(lease)
        self._held.discard(member)
        if self.store.available:
            task = asyncio.ensure_future(self._release(member))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release(self, member: str) -> None:
        try:
            await self.store.redis.zrem(self.key, member)
        except StoreErrors as exc:
            self.store.failed(exc)

    def _refresh(self, pipeline: Pipeline) -> None:
        if self._held:
            pipeline.eval(_EXTEND, 1, self.key, LEASE_TTL_MS, *self._held)
