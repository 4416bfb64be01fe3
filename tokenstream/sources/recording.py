"""Recording: an upstream reply's events, stamped as they arrive and stored as a fixture.

``Recorder.tap`` wraps the decoded events of one upstream reply: it passes each on
unchanged, at once, and notes its arrival on ``time.monotonic`` (the network's time,
whatever clock paces the client's stream, to the microsecond: uvloop's ``loop.time()``
counts whole milliseconds) relative to the moment the request was sent.
When the reply has been read to its end, the fixture is written in a worker thread, so
the client's stream never waits for the disk. A reply that failed (an error event, a
connection cut, a time-out: the decoder raises) or was not read to its end (the client
left) is not stored: a fixture is always a whole, good reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from tokenstream.engine.events import ReplyError, ReplyEvent
from tokenstream.engine.messages import Conversation
from tokenstream.engine.replay import TimedEvent
from tokenstream.sources.fixture_store import FixtureStore
from tokenstream.sources.fixtures import Fixture

__all__ = ["Recorder"]

log = logging.getLogger(__name__)


class Recorder:
    """Stores the upstream's whole replies in one ``FixtureStore``."""

    def __init__(self, store: FixtureStore, dialect: str, base_url: str | None) -> None:
        """``dialect`` and ``base_url``: the upstream's, noted in each fixture."""
        self.store = store
        self.dialect = dialect
        self.base_url = base_url
        self._writes: set[asyncio.Task[None]] = set()

    async def tap(
        self,
        items: AsyncGenerator[ReplyEvent, None],
        conversation: Conversation,
        sent_at: float,
    ) -> AsyncGenerator[ReplyEvent, None]:
        """``items`` unchanged; recorded once they are all read. ``sent_at``: when the
        request was sent, on ``time.monotonic``."""
        events: list[TimedEvent] = []
        whole = False
        try:
            async with aclosing(items) as arriving:
                async for item in arriving:
                    events.append((time.monotonic() - sent_at, item))
                    yield item
            whole = bool(events) and not any(isinstance(e, ReplyError) for _, e in events)
        finally:
            if whole:
                self._store(Fixture.recorded(conversation, self.dialect, events, self.base_url))
            else:
                log.info("upstream reply not recorded: it failed or was not read to its end")

    def _store(self, fixture: Fixture) -> None:
        placed = self.store.add(fixture)
        task = asyncio.get_running_loop().create_task(self._write(placed))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, fixture: Fixture) -> None:
        try:
            path = await asyncio.to_thread(self.store.write, fixture)
        except OSError as exc:
            log.error("cannot write the fixture %s: %s", fixture.path, exc.strerror or exc)
            return
        log.info("recorded %s (%d events)", path, len(fixture.events))

    async def aclose(self) -> None:
        """Wait for the fixtures being written (at shutdown: none is lost)."""
        if self._writes:
            await asyncio.wait(list(self._writes))
