"""The benchmark's baseline server: a minimal aiohttp handler, one ``asyncio.sleep`` per token.

This is the straightforward design tokenstream is measured against, in the same run: the
same bytes (the writes are prepared by scripts/bench.py from tokenstream's own wire format
and handed over in a JSON file), each stream its own task sleeping once per token. The
sleeps aim at absolute deadlines (``deadline - loop.time()``), so the baseline does not
drift; what it lacks is only the shared scheduling and the pipeline.

    python scripts/bench_baseline.py --port 8090 --writes writes.json [--loop uvloop] [--workers N]

``--workers N`` (for ``bench.py --workers N``): this process starts N copies of itself that
each bind the port with ``SO_REUSEPORT`` (the kernel spreads new connections over them, as
over tokenstream's workers) and passes SIGTERM/SIGINT on to them; it serves nothing itself.

Query parameters honoured (others are ignored): ``tokens_per_second`` (0 = unpaced) and
``ttft_ms``. ``POST /v1/chat/completions`` streams the same writes at 50 tokens/s (the body
is not read): it is the fake upstream of the proxy scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from types import FrameType

from aiohttp import web

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

WRITES = web.AppKey("writes", list)


async def stream(request: web.Request) -> web.StreamResponse:
    writes: list[bytes] = request.app[WRITES]
    rate = float(request.query.get("tokens_per_second", "50"))
    interval = 1.0 / rate if rate > 0 else 0.0
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(headers=HEADERS)
    await response.prepare(request)
    deadline = loop.time() + float(request.query.get("ttft_ms", "0")) / 1000.0
    last = len(writes) - 1
    for index, data in enumerate(writes):
        if interval and index < last:  # the closing write follows the last token at once
            if index:
                deadline += interval
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await response.write(data)
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    # which process answered, as tokenstream's /healthz says it: bench.py waits for them all
    return web.json_response({"status": "ok", "worker": {"pid": os.getpid()}})


def supervise(args: argparse.Namespace) -> int:
    """Run ``args.workers`` copies of this script on the port until a signal."""
    argv = [sys.executable, os.path.abspath(__file__), "--host", args.host, "--port",
            str(args.port), "--writes", args.writes, "--loop", args.loop, "--reuse-port"]
    workers = [subprocess.Popen(argv) for _ in range(args.workers)]

    def stop(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return max(abs(worker.wait()) for worker in workers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--writes", required=True, help="JSON list of strings, one per write")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes serving the port (more than 1: this one supervises)")
    parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT")
    args = parser.parse_args()
    if args.workers > 1:
        sys.exit(supervise(args))
    with open(args.writes, encoding="utf-8") as file:
        writes = [text.encode("utf-8") for text in json.load(file)]
    app = web.Application()
    app[WRITES] = writes
    app.router.add_get("/v1/stream", stream)
    app.router.add_post("/v1/chat/completions", stream)
    app.router.add_get("/healthz", healthz)
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None,
                handler_cancellation=True, backlog=1024, loop=loop,
                reuse_port=args.reuse_port or None)


if __name__ == "__main__":
    main()
