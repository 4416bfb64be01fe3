"""Stream lifetimes: how many run at once, and how each is stopped early.

    StreamRegistry.open()   429 beyond max_concurrent_streams; 503 once shutdown began
          │
    StreamControl           one per running reply: its task, and whether and why it must
          │                 stop: "time_limit" (max_stream_duration_s, from the runner's
          │                 watch timer) or "shutdown"
          │   StreamRegistry.shutdown(grace): streams may finish for ``grace`` seconds; then
          │   each remaining one is stopped
    StreamRegistry.close()

Cancelling is the one way to interrupt every kind of wait (a pacing sleep, an upstream read),
so ``stop()`` cancels the stream's task while it is inside ``interruptible()``, and
``consume_stop()`` tells the runner that the cancellation was ours, and why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, Protocol

from tokenstream.errors import TooManyRequests, Unavailable

__all__ = ["SharedLimit", "StopReason", "StreamControl", "StreamRegistry"]

StopReason = Literal["shutdown", "time_limit", "fault"]


class StreamControl:
    """The handle the registry keeps on one running reply."""

    __slots__ = ("_interruptible", "_stop_cancelled", "client", "leased", "stop_reason", "task")

    def __init__(self, task: asyncio.Task[object] | None, client: str | None = None) -> None:
        self.task = task
        self.client = client
        """Who asked (an API key or an address), for the per-client limit."""
        self.stop_reason: StopReason | None = None
        self.leased = False
        """Whether it holds a lease of a shared limit (``StreamRegistry.admit``)."""
        self._interruptible = False
        self._stop_cancelled = False

    def stop(self, reason: StopReason = "shutdown") -> None:
        """Ask the stream to end now. Safe to call more than once: the first reason stays."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        if self._interruptible:
            self._cancel()

    def interruptible(self) -> StreamControl:
        """A context: while inside, ``stop()`` cancels the task; outside it only sets the flag.

        (The control is its own context manager: no generator frame stays alive with every
        open stream.)
        """
        return self

    def __enter__(self) -> None:
        self._interruptible = True
        if self.stop_reason is not None:
            self._cancel()

    def __exit__(self, *exc_info: object) -> None:
        self._interruptible = False

    def consume_stop(self) -> StopReason | None:
        """Why the stream was stopped, when the CancelledError being handled came from
        ``stop()`` alone; None when it came from elsewhere too (the client left)."""
        if not self._stop_cancelled:
            return None
        self._stop_cancelled = False
        if self.task is not None and self.task.uncancel() != 0:
            return None
        return self.stop_reason

    def _cancel(self) -> None:
        if self.task is not None and not self.task.done() and not self._stop_cancelled:
            self._stop_cancelled = True
            self.task.cancel()


class SharedLimit(Protocol):
    """``max_concurrent`` counted over every process that shares a store (Redis): a lease
    per running stream, which expires if its process dies."""

    async def acquire(self, lease: int, limit: int) -> bool | None:
        """Take a lease if fewer than ``limit`` are held: True; False when full; None when
        the store cannot be reached (the process's own count decides alone)."""
        ...

    def release(self, lease: int) -> None:
        """Give the lease back (without waiting)."""
        ...


class StreamRegistry:
    """Every running reply, the concurrency limit, and the shutdown sequence."""

    def __init__(
        self, max_concurrent: int | None, retry_after_s: int, max_per_client: int | None = None
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_per_client = max_per_client
        self.retry_after_s = retry_after_s
        self.closing = False
        self._active: set[StreamControl] = set()
        self._per_client: dict[str, int] = {}
        self._uploads: set[StreamControl] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()
        self.shared: SharedLimit | None = None
        """The limit shared with other processes, if any (``admit``)."""

    def __len__(self) -> int:
        return len(self._active)

    def open(self, client: str | None = None) -> StreamControl:
        """Admit a reply of ``client`` (None: not counted per client), or refuse it."""
        retry = {"Retry-After": str(self.retry_after_s)}
        if self.closing:
            raise Unavailable(
                "The server is shutting down and accepts no new streams; retry on another "
                "instance or after it restarts.",
                code="server_shutting_down",
                headers=retry,
            )
        if self.max_concurrent is not None and len(self._active) >= self.max_concurrent:
            raise TooManyRequests(
                f"Too many concurrent streams: this server runs at most {self.max_concurrent} "
                f"at once (server.max_concurrent_streams). Retry after {self.retry_after_s} s.",
                code="rate_limit_exceeded",
                headers=retry,
            )
        if client is not None and self.max_per_client is not None:
            if self._per_client.get(client, 0) >= self.max_per_client:
                raise TooManyRequests(
                    f"Too many concurrent streams from this client: at most "
                    f"{self.max_per_client} at once (server.max_streams_per_client). Retry "
                    f"after {self.retry_after_s} s.",
                    code="rate_limit_exceeded",
                    headers=retry,
                )
            self._per_client[client] = self._per_client.get(client, 0) + 1
        else:
            client = None
        control = StreamControl(asyncio.current_task(), client)
        self._active.add(control)
        self._idle.clear()
        return control

    async def admit(self, client: str | None = None) -> StreamControl:
        """``open``, then (with a shared limit) a lease of the limit every process shares:
        429 when the others hold it all."""
        control = self.open(client)
        shared, limit = self.shared, self.max_concurrent
        if shared is None or limit is None:
            return control
        try:
            taken = await shared.acquire(id(control), limit)
        except BaseException:
            self.close(control)
            raise
        if taken is False:
            self.close(control)
            raise TooManyRequests(
                f"Too many concurrent streams: the servers sharing this store run at most "
                f"{limit} at once together (server.max_concurrent_streams). Retry after "
                f"{self.retry_after_s} s.",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        control.leased = taken is True
        return control

    def close(self, control: StreamControl) -> None:
        if control.leased:
            control.leased = False
            if self.shared is not None:
                self.shared.release(id(control))
        if control in self._active and control.client is not None:
            left = self._per_client[control.client] - 1
            if left:
                self._per_client[control.client] = left
            else:
                del self._per_client[control.client]
        self._active.discard(control)
        if not self._active:
            self._idle.set()

    def open_upload(self) -> StreamControl:
        """A request whose body is still arriving: shutdown stops it at once (it could only
        be refused once read), as ``stop()`` stops a stream."""
        control = StreamControl(asyncio.current_task())
        self._uploads.add(control)
        if self.closing:
            control.stop()
        return control

    def close_upload(self, control: StreamControl) -> None:
        self._uploads.discard(control)

    @property
    def uploads(self) -> int:
        """Requests whose body is still arriving."""
        return len(self._uploads)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def hurry(self) -> None:
        """End the grace period now (a second SIGINT/SIGTERM)."""
        self._hurry.set()

    async def shutdown(self, grace_s: float, final_timeout_s: float) -> int:
        """Refuse new streams, let running ones finish for ``grace_s``, then stop the rest.

        Returns how many streams had to be stopped. ``final_timeout_s`` bounds the wait for
        the stopped streams to write their last event (a stalled client's write times out
        sooner, at ``send_timeout_s``).
        """
        self.closing = True
        for upload in list(self._uploads):
            upload.stop()
        if self._active and grace_s > 0:
            await _first_of(self._idle.wait(), self._hurry.wait(), within=grace_s)
        remaining = list(self._active)
        for control in remaining:
            control.stop()
        if self._active:
            await _first_of(self._idle.wait(), within=final_timeout_s)
        return len(remaining)


async def _first_of(*waits: Coroutine[Any, Any, Any], within: float) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
