"""The connection to a shared store (``store: redis://...``), and what happens when it is lost.

Everything that uses Redis (``redis_logs``, ``redis_journal``, ``redis_limit``) asks it
through one ``RedisStore`` per process, and tells it of every failure (``failed``): the first
failure of an outage logs one warning and marks the store unavailable; each failed operation
counts in ``tokenstream_store_errors_total``. While it is unavailable nothing new is sent to
Redis (new streams are not mirrored, the journal and the limit are this process's own) and a
probe asks it every ``PROBE_INTERVAL_S``; once it answers, new streams use it again.

Each process also keeps a key of its own alive (``alive_key``), refreshed every
``REFRESH_INTERVAL_S``: a reader in another process follows a stream only as long as the
process making it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tokenstream.engine.accounting import StreamStats
from tokenstream.errors import ConfigError
from tokenstream.server.background import in_background

__all__ = ["PROBE_INTERVAL_S", "REFRESH_INTERVAL_S", "RedisStore", "StoreErrors"]

log = logging.getLogger("tokenstream.store")

StoreErrors = (RedisError, OSError)
"""What a lost or refusing Redis raises."""

REFRESH_INTERVAL_S = 1.0
ALIVE_TTL_MS = 4000
"""A process that stopped refreshing its key is taken for dead after this long."""
PROBE_INTERVAL_S = 1.0


class RedisStore:
    """One process's client of the shared store, its availability, and its periodic work."""

    def __init__(self, url: str, prefix: str, stats: StreamStats) -> None:
        self.url = url
        self.prefix = prefix
        self.stats = stats
        self.redis: Redis = Redis.from_url(
            url, socket_timeout=3.0, socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 1),  # one retry, at once: a pooled connection was stale
        )
        self.process = secrets.token_urlsafe(9)
        """This process's name in the store (its leases, the streams it makes)."""
        self.available = True
        self._periodic: list[Callable[[Pipeline], None]] = []

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def alive_key(self) -> str:
        return self.key("alive", self.process)

    def every_refresh(self, work: Callable[[Pipeline], None]) -> None:
        """``work(pipeline)`` adds its commands to the pipeline sent every refresh."""
        self._periodic.append(work)

    def failed(self, error: BaseException) -> None:
        """An operation failed: one warning per outage, and the count of failures."""
        self.stats.store_errors += 1
        if self.available:
            self.available = False
            log.warning(
                "The shared store %s cannot be reached (%s): streams go on without resume "
                "elsewhere, the journal and the concurrency limit are this process's own "
                "until it answers again.", self._safe_url(), error or type(error).__name__,
            )

    def _safe_url(self) -> str:
        """The URL without a password."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    async def check(self) -> None:
        """At start-up: Redis must answer (else the server does not start)."""
        try:
            await self.redis.ping()
        except StoreErrors as exc:
            await self.redis.aclose()
            raise ConfigError("the store", [(
                "store", f"{self._safe_url()} does not answer ({exc}); start Redis there or "
                "set store: memory",
            )]) from None

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.check()
        try:
            async with in_background(self._refresh_periodically()):
                yield
        finally:
            with contextlib.suppress(*StoreErrors):
                await self.redis.delete(self.alive_key)
            await self.redis.aclose()

    async def _refresh_periodically(self) -> None:
        while True:
            if self.available:
                await self.refresh()
                await asyncio.sleep(REFRESH_INTERVAL_S)
            else:
                await asyncio.sleep(PROBE_INTERVAL_S)
                await self._probe()

    async def refresh(self) -> None:
        pipeline = self.redis.pipeline(transaction=False)
        pipeline.set(self.alive_key, b"1", px=ALIVE_TTL_MS)
        for work in self._periodic:
            work(pipeline)
        try:
            await pipeline.execute()
        except StoreErrors as exc:
            self.failed(exc)

    async def _probe(self) -> None:
        try:
            await self.redis.ping()
        except StoreErrors:
            return
        self.available = True
        log.warning("The shared store %s answers again: new streams use it.",
                    self._safe_url())
        await self.refresh()
