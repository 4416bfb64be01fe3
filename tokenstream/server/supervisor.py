"""``tokenstream serve --workers N``: N worker processes on one port, kept running.

Each worker is a ``tokenstream serve`` process of its own that binds the port with
``SO_REUSEPORT``, so the kernel spreads new connections over the workers' listening sockets.
The supervisor serves nothing itself. It

- holds a bound, never listening, ``SO_REUSEPORT`` socket on the address as long as it runs:
  it checks the address once, turns port 0 into one port for every worker, and keeps the port
  while a worker restarts (only sockets with ``SO_REUSEPORT`` of the same user can join);
- gives each worker one end of a socket pair: the worker writes ``ready`` on it once it
  listens; the supervisor writes ``stop`` and ``hurry`` (messages, not signals, so that a
  worker signalled directly as well still stops once), and its end closes if it dies;
- restarts a worker that exits on its own after a backoff that doubles from
  ``FIRST_BACKOFF_S`` to ``MAX_BACKOFF_S`` and starts again once a worker has run for
  ``STABLE_S``; a worker that exits before it was first ready stops the whole server (a
  problem restarting cannot fix);
- on the first SIGTERM/SIGINT tells every worker ``stop``: each stops as on its own first
  signal (no new connections, running streams get ``server.shutdown_grace_s``); on a second,
  ``hurry`` (each ends its remaining streams now); on a third, SIGKILL;
- sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory for the workers' metrics files
  (``tokenstream.server.metrics``), marks each worker that ends as dead there, and removes it
  at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.multiprocess import mark_process_dead

from tokenstream.server.metrics import MULTIPROC_DIR_ENV

__all__ = ["FIRST_BACKOFF_S", "MAX_BACKOFF_S", "STABLE_S", "Supervisor", "reserve_port"]

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0

_SIGNALS = (signal.SIGINT, signal.SIGTERM)

WorkerCommand = Callable[[int, int], list[str]]
"""The command line of worker ``index`` whose end of its supervisor socket is file ``fd``."""


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound ``SO_REUSEPORT`` socket on ``host:port`` that the workers can bind beside.

    Raises ``OSError`` when the address cannot be bound (taken without ``SO_REUSEPORT``, or
    not local)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    reserved = socket.socket(family, kind, proto)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(address)
    except OSError:
        reserved.close()
        raise
    return reserved


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    control: socket.socket
    """The supervisor's end of the worker's socket pair."""

    def describe_exit(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"


class Supervisor:
    def __init__(
        self,
        count: int,
        command: WorkerCommand,
        *,
        announce: Callable[[], None],
    ) -> None:
        if count < 1:
            raise ValueError("a supervisor needs at least one worker")
        self._count = count
        self._command = command
        self._announce = announce
        self._workers: dict[int, _Worker] = {}
        self._ready: set[int] = set()
        self._all_ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._signals_seen = 0
        self._failed_to_start: list[str] = []
        self._metrics_dir = ""

    async def run(self) -> int:
        """Run the workers until a signal, or until one cannot start; the exit code."""
        loop = asyncio.get_running_loop()
        self._metrics_dir = tempfile.mkdtemp(prefix="tokenstream-metrics-")
        for signum in _SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            slots = [asyncio.create_task(self._keep_running(index))
                     for index in range(self._count)]
            ready = asyncio.create_task(self._all_ready.wait())
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait((ready, stopping), return_when=asyncio.FIRST_COMPLETED)
            if self._all_ready.is_set() and not self._stopping.is_set():
                self._announce()
            await stopping
            ready.cancel()
            await asyncio.gather(*slots)
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        if self._failed_to_start:
            log.error("stopped: %s", self._failed_to_start[0])
            return 1
        log.info("stopped")
        return 0

    def _on_signal(self, signum: signal.Signals) -> None:
        self._signals_seen += 1
        if self._signals_seen == 1:
            log.info("%s received: stopping %d workers (each lets its streams finish)",
                     signum.name, len(self._workers))
            self._stop()
        elif self._signals_seen == 2:
            log.info("%s received again: the workers end their remaining streams now",
                     signum.name)
            self._tell_all(b"hurry\n")
        else:
            log.warning("%s received a third time: killing the workers", signum.name)
            self._send_all(signal.SIGKILL)

    def _stop(self) -> None:
        self._stopping.set()
        self._tell_all(b"stop\n")

    def _tell_all(self, message: bytes) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(OSError):  # the worker has just exited
                worker.control.send(message)

    def _send_all(self, signum: signal.Signals) -> None:
        for worker in self._workers.values():
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    async def _keep_running(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF_S
        while not self._stopping.is_set():
            started = loop.time()
            worker = await self._start(index)
            was_ready = await self._wait_ready(worker)
            await worker.process.wait()
            del self._workers[index]
            worker.control.close()
            mark_process_dead(worker.process.pid, self._metrics_dir)
            if self._stopping.is_set():
                log.info("worker %d (pid %d) %s", index, worker.process.pid,
                         worker.describe_exit())
                return
            if not was_ready and not self._all_ready.is_set():
                self._failed_to_start.append(
                    f"worker {index} {worker.describe_exit()} before it was ready"
                )
                self._stop()
                return
            if loop.time() - started >= STABLE_S:
                backoff = FIRST_BACKOFF_S
            log.warning("worker %d (pid %d) %s; restarting it in %g s", index,
                        worker.process.pid, worker.describe_exit(), backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _start(self, index: int) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(index, theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env={**os.environ, MULTIPROC_DIR_ENV: self._metrics_dir},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        worker = _Worker(index, process, ours)
        self._workers[index] = worker
        if self._stopping.is_set():  # stopped while this one was being started
            with contextlib.suppress(OSError):
                ours.send(b"stop\n")
        log.info("worker %d started (pid %d)", index, process.pid)
        return worker

    async def _wait_ready(self, worker: _Worker) -> bool:
        """Whether the worker said it listens (False: it exited first)."""
        loop = asyncio.get_running_loop()
        try:
            message = await loop.sock_recv(worker.control, 64)
        except OSError:
            message = b""
        if not message.startswith(b"ready"):
            return False
        self._ready.add(worker.index)
        if len(self._ready) == self._count:
            self._all_ready.set()
        return True
