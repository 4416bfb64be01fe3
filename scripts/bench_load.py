"""Load generator for scripts/bench.py: raw asyncio protocols that only timestamp events.

Run as a child process. It reads one JSON job from stdin, opens the streams, and writes one
JSON result to stdout (the ``memory`` mode writes a ``ready`` line first and then waits for
a line on stdin before closing its streams).

It does not parse SSE or HTTP beyond what counting needs, so it stays cheap: an event ends
at a blank line, ``\\n\\n``, which the SSE encoding only produces at the end of an event
and which the HTTP chunk framing (``\\r\\n``) never produces. Every event that arrives in
one read gets that read's timestamp (``time.monotonic``, the clock the server's event loop
uses too, shared by all processes).
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from typing import Any

_HEADER_END = b"\r\n\r\n"


class StreamProtocol(asyncio.Protocol):
    __slots__ = (
        "bytes",
        "done",
        "error",
        "events",
        "first",
        "header",
        "opened_at",
        "record",
        "request",
        "status_ok",
        "tail_nl",
        "times",
        "transport",
    )

    def __init__(self, request: bytes, record: bool, done: asyncio.Future[None]) -> None:
        self.request = request
        self.record = record
        self.done = done
        self.first: asyncio.Future[None] | None = None  # set by the memory mode
        self.header = b""
        self.status_ok: bool | None = None
        self.tail_nl = False
        self.events = 0
        self.bytes = 0
        self.times: list[float] = []
        self.error: str | None = None
        self.transport: asyncio.Transport | None = None
        self.opened_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.opened_at = time.monotonic()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.status_ok is None:
            self.header += data
            end = self.header.find(_HEADER_END)
            if end < 0:
                return
            self.status_ok = self.header.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
            if not self.status_ok:
                self.error = self.header.split(b"\r\n", 1)[0].decode("latin-1")
            data = self.header[end + 4 :]
            self.header = b""
        self.bytes += len(data)
        n = data.count(b"\n\n")
        if self.tail_nl and data[:1] == b"\n":
            n += 1
        self.tail_nl = data[-1:] == b"\n" and data[-2:] != b"\n\n"
        if n:
            if self.first is not None and not self.first.done():
                self.first.set_result(None)
            self.events += n
            if self.record:
                self.times.extend([now] * n)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
        if not self.done.done():
            self.done.set_result(None)
        if self.first is not None and not self.first.done():
            self.first.set_result(None)


def _request(host: str, port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")


async def _open(loop: asyncio.AbstractEventLoop, job: dict[str, Any], record: bool,
                delay: float) -> StreamProtocol:
    if delay > 0:
        await asyncio.sleep(delay)
    done: asyncio.Future[None] = loop.create_future()
    protocol = StreamProtocol(_request(job["host"], job["port"], job["path"]), record, done)
    if job["mode"] == "memory":
        protocol.first = loop.create_future()
    try:
        await loop.create_connection(lambda: protocol, job["host"], job["port"])
    except OSError as exc:
        protocol.error = f"connect: {exc}"
        done.set_result(None)
    return protocol


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _streams_job(job: dict[str, Any]) -> dict[str, Any]:
    """``fidelity`` and ``memory``: ``streams`` concurrent streams, opened over ``ramp_s``."""
    loop = asyncio.get_running_loop()
    rng = random.Random(job.get("seed", 0))
    start_at = job["start_at"]
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    cpu0, wall0 = _cpu(), time.monotonic()
    record = job["mode"] == "fidelity"
    delays = sorted(rng.uniform(0, job["ramp_s"]) for _ in range(job["streams"]))
    opening = [asyncio.ensure_future(_open(loop, job, record, d)) for d in delays]
    protocols = await asyncio.gather(*opening)
    if job["mode"] == "memory":
        # ready once every stream has its first event (the stream is set up on the server)
        await asyncio.wait([p.first for p in protocols if p.first is not None],
                           timeout=job["timeout_s"])
        holding = sum(1 for p in protocols if p.events > 0 and not p.done.done())
        print(json.dumps({"ready": True, "holding": holding}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        for p in protocols:
            if p.transport is not None:
                p.transport.close()
    done = [p.done for p in protocols]
    _, pending = await asyncio.wait(done, timeout=job["timeout_s"])
    cpu1, wall1 = _cpu(), time.monotonic()
    streams = []
    for p in protocols:
        if p.done in pending:
            p.error = p.error or "timed out"
            if p.transport is not None:
                p.transport.abort()
        streams.append(
            {
                "events": p.events,
                "bytes": p.bytes,
                "error": p.error,
                "opened_at": p.opened_at,
                "times": p.times if record else None,
            }
        )
    return {"streams": streams, "cpu_s": cpu1 - cpu0, "wall_s": wall1 - wall0}


async def _throughput_job(job: dict[str, Any]) -> dict[str, Any]:
    """``throughput``: keep ``streams`` streams busy until ``duration_s`` has passed."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, job["start_at"] - time.monotonic()))
    end_at = job["start_at"] + job["duration_s"]
    cpu0, wall0 = _cpu(), time.monotonic()
    totals = {"events": 0, "bytes": 0, "streams": 0, "errors": 0}
    live: list[StreamProtocol] = []

    async def slot() -> None:
        while time.monotonic() < end_at:
            protocol = await _open(loop, job, False, 0)
            live.append(protocol)
            await protocol.done
            live.remove(protocol)
            totals["events"] += protocol.events
            totals["bytes"] += protocol.bytes
            totals["streams"] += 1
            totals["errors"] += protocol.error is not None

    slots = [asyncio.ensure_future(slot()) for _ in range(job["streams"])]
    await asyncio.sleep(max(0.0, end_at - time.monotonic()))
    wall1 = time.monotonic()
    # events of streams still running count up to now; then stop them
    for protocol in list(live):
        totals["events"] += protocol.events
        totals["bytes"] += protocol.bytes
        if protocol.transport is not None:
            protocol.transport.abort()
    for task in slots:
        task.cancel()
    await asyncio.gather(*slots, return_exceptions=True)
    return {**totals, "cpu_s": _cpu() - cpu0, "wall_s": wall1 - wall0}


def main() -> None:
    job = json.loads(sys.stdin.readline())
    if job.get("loop") == "uvloop":
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    work = _throughput_job if job["mode"] == "throughput" else _streams_job
    result = runner(work(job))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
