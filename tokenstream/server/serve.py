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

A worker of ``serve --workers N`` (``tokenstream.server.supervisor``) binds with
``SO_REUSEPORT`` and holds a socket to its supervisor: it says ``ready`` on it once it
listens; ``stop`` from the supervisor, or the socket's end (the supervisor is gone), starts
the shutdown as a first signal does, and ``hurry`` ends the grace period as a second does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable

from aiohttp import web

from tokenstream.server.app import STATE

__all__ = ["serve", "url_of"]

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def url_of(address: object) -> str:
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
    reuse_port: bool = False,
    supervisor: socket.socket | None = None,
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
    first_signal: list[str] = []  # why it stops
    signals_seen = 0

    def begin_stop(reason: str) -> None:
        if not stop.is_set():
            first_signal.append(reason)
            stop.set()

    def on_signal(signum: signal.Signals) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            begin_stop(f"{signum.name} received")
        else:
            log.info("%s received again: ending the remaining streams now", signum.name)
            app[STATE].streams.hurry()

    def on_supervisor_message(supervisor: socket.socket) -> None:
        # not signals: a worker that gets both the supervisor's stop and a SIGTERM of its own
        # (systemd signals the whole group, a terminal's Ctrl-C the process group) stops once
        try:
            message = supervisor.recv(64)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if not message:
            loop.remove_reader(supervisor)
            begin_stop("the supervisor is gone")
        elif b"hurry" in message:
            begin_stop("the supervisor stops its workers")
            log.info("the supervisor hurries its workers: ending the remaining streams now")
            app[STATE].streams.hurry()
        elif b"stop" in message:
            begin_stop("the supervisor stops its workers")

    def tell_supervisor_ready(supervisor: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: its end is closed
            supervisor.sendall(b"ready\n")
        supervisor.setblocking(False)
        loop.add_reader(supervisor, on_supervisor_message, supervisor)

    for signum in _SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        site = web.TCPSite(runner, host, port, backlog=backlog, reuse_port=reuse_port or None)
        await site.start()
        # Everything loaded so far (modules, the tokenizer's 100k-entry rank table, config)
        # lives as long as the process. Freezing it keeps the cyclic garbage collector from
        # walking it again on every full collection: such a walk stopped every stream for
        # tens of milliseconds at once.
        gc.collect()
        gc.freeze()
        if announce is not None:
            announce([url_of(address) for address in runner.addresses])
        if supervisor is not None:
            tell_supervisor_ready(supervisor)
        await stop.wait()
        # stop accepting before saying so: once the line is out, no new client gets in
        await site.stop()
        log.info("%s: shutting down (streams get %g s to finish)",
                 first_signal[0], server.shutdown_grace_s)
    finally:
        try:
            await runner.cleanup()
        finally:
            if supervisor is not None:
                loop.remove_reader(supervisor)
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)
    log.info("stopped")
