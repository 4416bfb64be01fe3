"""How a started stream ends: counted in ``StreamStats``, noted in its access record, logged
once when it is unusual, and, when it failed, ended with the dialect's error event."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from tokenstream.engine.accounting import AccessRecord, StreamStats
from tokenstream.engine.events import ReplyEncoder
from tokenstream.errors import UpstreamStreamError
from tokenstream.sse.transport import ClientGone, ClientStalled

__all__ = ["Accounting"]

log = logging.getLogger("tokenstream.engine.runner")


class _Output(Protocol):
    """The connection (``SSEResponse``), or a resumable reply's feed (``resume``)."""

    @property
    def peak_buffered(self) -> int: ...

    def abort(self) -> None: ...

    async def close(self, ending: bytes = b"") -> None: ...


class Accounting:
    """How a started stream ends, counted and logged the same way for every reply.

    A client that left or stalled gets nothing more (a stalled one is aborted, which frees
    its queue); a source that failed, or any other error, is reported to the client as the
    dialect's error event and ending. A cancellation (the client left) propagates.

    A class rather than an ``asynccontextmanager``: it stays alive as long as the stream, and
    a slotted object is a fraction of a suspended generator and its wrapper.
    """

    __slots__ = ("encoder", "path", "record", "send_timeout", "sse", "stats")

    def __init__(
        self,
        stats: StreamStats,
        sse: _Output,
        encoder: ReplyEncoder,
        record: AccessRecord,
        path: str,
        send_timeout: float | None,
    ) -> None:
        self.stats = stats
        self.sse = sse
        self.encoder = encoder
        self.record = record
        self.path = path
        self.send_timeout = send_timeout

    async def __aenter__(self) -> None:
        self.stats.active += 1
        self.stats.started += 1

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        stats, sse, record, path = self.stats, self.sse, self.record, self.path
        try:
            if exc is None:
                stats.completed += 1
            elif isinstance(exc, ClientStalled):
                stats.disconnected += 1
                stats.stalled += 1
                record.outcome = "stalled"
                record.peak_buffered = sse.peak_buffered
                log.info("client stalled on %s: no write completed in %g s, %d bytes queued; "
                         "connection aborted", path, self.send_timeout,
                         sse.peak_buffered)
                sse.abort()
            elif isinstance(exc, ClientGone):
                stats.disconnected += 1
                record.outcome = "disconnected"
                log.info("client left %s after %d completion tokens", path, record.tokens)
            elif isinstance(exc, asyncio.CancelledError):
                stats.disconnected += 1
                record.outcome = "disconnected"
                log.info("client left %s after %d completion tokens (handler cancelled)",
                         path, record.tokens)
                return False
            elif isinstance(exc, UpstreamStreamError):
                log.warning("upstream failed after %d tokens on %s: %s", record.tokens, path,
                            exc.message)
                await self._report_failure(self.encoder.error(exc.message, exc.error_type,
                                                              exc.code))
            elif isinstance(exc, Exception):
                log.error("stream failed on %s", path, exc_info=exc)
                await self._report_failure(
                    self.encoder.error("The stream failed on the server.", "server_error", None)
                )
            else:
                return False  # KeyboardInterrupt, SystemExit, GeneratorExit: not ours
            return True
        finally:
            stats.active -= 1

    async def _report_failure(self, error_event: bytes) -> None:
        self.stats.failed += 1
        self.record.outcome = "failed"
        try:
            await self.sse.close(error_event)
        except ClientGone:
            self.sse.abort()
