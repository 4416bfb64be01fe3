"""Running the app: bind, serve until SIGTERM or SIGINT, then shut down gracefully.

    first signal ─> stop accepting: the listening sockets close
                 ─> idle keep-alive connections close
                 ─> app.on_shutdown: running streams may finish for server.shutdown_grace_s
                    (a second signal ends that wait); each one still running then gets a
                    final error event and the sentinel
                 ─> handlers still running after that are cancelled
                 ─> app cleanup; ``serve`` returns and the process exits 0

``web.run_app`` would do most of this, but it runs the shutdown inside a task it has already
cancelled, so any timeout in the shutdown turns into a cancellation of the shutdown itself.
Owning the signal handlers keeps the sequence plain.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from tokenstream.server.app import STATE

__all__ = ["serve"]

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _url(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"
    return str(address)


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    announce: Callable[[list[str]], None] | None = None,
    backlog: int = 128,
) -> None:
    """Serve ``app`` until the first SIGINT/SIGTERM, then shut down as described above."""
    server = app[STATE].config.server
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,  # a client that leaves cancels its stream at once
        access_log=None,  # tokenstream.access writes one structured line per request instead
        shutdown_timeout=server.send_timeout_s + 2,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first_signal: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        if not stop.is_set():
            first_signal.append(signum)
            stop.set()
        else:
            log.info("%s received again: ending the remaining streams now", signum.name)
            app[STATE].streams.hurry()

    for signum in _SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        site = web.TCPSite(runner, host, port, backlog=backlog)
        await site.start()
        # Everything loaded so far (modules, the tokenizer's 100k-entry rank table, config)
        # lives as long as the process. Freezing it keeps the cyclic garbage collector from
        # walking it again on every full collection: such a walk stopped every stream for
        # tens of milliseconds at once.
        gc.collect()
        gc.freeze()
        if announce is not None:
            announce([_url(address) for address in runner.addresses])
        await stop.wait()
        # stop accepting before saying so: once the line is out, no new client gets in
        await site.stop()
        log.info("%s received: shutting down (streams get %g s to finish)",
                 first_signal[0].name, server.shutdown_grace_s)
    finally:
        try:
            await runner.cleanup()
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)
    log.info("stopped")
