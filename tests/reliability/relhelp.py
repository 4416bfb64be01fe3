"""Helpers for the reliability tests: apps with given server settings, raw sockets, waiting,
and a real ``tokenstream serve`` process read as it runs.

Nothing here sleeps on the wall clock: waiting means yielding to the event loop
(``asyncio.sleep(0)``) until a condition holds, with a bound on the number of turns, or
awaiting an event with a generous guard that only fires when the code under test is broken.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from tokenstream.config import Config, validate_mapping
from tokenstream.engine.clock import FakeClock, TimerClock
from tokenstream.server.app import create_app
from tokenstream.sse.parser import ServerSentEvent, SSEDecoder

from support import ManualClock

GUARD_S = 30.0
"""Upper bound for awaiting an event that must happen; reached only when a test fails."""

FAST = {"tokens_per_second": None, "ttft_ms": 0, "jitter": 0, "pause_ms": 0}


def make_config(server: dict[str, Any] | None = None, **sections: Any) -> Config:
    """Streams are not resumable unless ``resume`` says so: these tests are about one
    connection's stream (what a client that leaves or stalls does to it); resumable ones,
    which go on after their client left, are ``tests/test_resume.py``'s."""
    data: dict[str, Any] = {
        "server": {"heartbeat_s": 0, **(server or {})},
        "resume": {"enabled_scripted": False},
        **sections,
    }
    return validate_mapping(data, "<test>")


def make_app(
    server: dict[str, Any] | None = None,
    *,
    clock: TimerClock | None = None,
    environ: dict[str, str] | None = None,
    **sections: Any,
) -> web.Application:
    return create_app(
        make_config(server, **sections),
        clock=clock if clock is not None else FakeClock(),
        environ=environ or {},
    )


def assert_openai_error(body: dict[str, object], code: str | None = None) -> dict[str, object]:
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


HELD_PROFILE = {"tokens_per_second": 1, "ttft_ms": 0, "jitter": 0, "pause_ms": 0}
"""One token a second: on a ``ManualClock`` a stream sends its first event at once and waits
for the test to advance the clock before each of the others."""


def held_app(server: dict[str, Any] | None = None) -> tuple[web.Application, ManualClock]:
    """An app whose streams stay open, mid-reply, until the test advances the clock.

    No time limit unless ``server`` sets one (and no heartbeats, as in ``make_config``): a
    stream then waits on one timer only, its next event, and advancing the clock by an hour
    lets every reply finish."""
    clock = ManualClock()
    app = make_app(
        {"max_stream_duration_s": 0, **(server or {})},
        clock=clock,
        profiles={"held": HELD_PROFILE},
        default_profile="held",
    )
    return app, clock


def parse_sse(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()


async def spin_until(condition: Callable[[], bool], turns: int = 200_000) -> None:
    """Yield to the loop until ``condition()`` holds; fail after ``turns`` turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition not reached in {turns} event-loop turns")


async def guarded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, GUARD_S)


def open_socket_count() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


@asynccontextmanager
async def running(
    app: web.Application, *, sndbuf: int | None = None
) -> AsyncIterator[tuple[str, int, web.AppRunner]]:
    """Serve ``app`` on 127.0.0.1 (a free port); yields (host, port, runner).

    ``sndbuf`` sets SO_SNDBUF on the listening socket; accepted sockets inherit it, so a
    client that stops reading fills the kernel buffers after a few kilobytes.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.SockSite(runner, listener)
    await site.start()
    try:
        yield "127.0.0.1", port, runner
    finally:
        await runner.cleanup()


async def raw_connect(port: int, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while marker not in data:
        chunk = await guarded(loop.sock_recv(sock, 65536))
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            break
    return data


async def read_to_end(sock: socket.socket) -> bytes:
    """Everything until EOF; a reset counts as the end too."""
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        try:
            chunk = await guarded(loop.sock_recv(sock, 65536))
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def get_request(path: str, host: str = "127.0.0.1", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ServerProcess:
    """A started ``tokenstream serve`` (or gunicorn) process: its stderr lines as they come,
    the URL its banner names, and its exit code, each awaited under ``GUARD_S``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr: list[str] = []
        self.url = ""
        self._changed = asyncio.Event()
        self._stderr_task = asyncio.ensure_future(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.stderr.append(line.decode("utf-8", "replace"))
            self._changed.set()

    async def started(self) -> str:
        assert self.process.stdout is not None
        line = (await guarded(self.process.stdout.readline())).decode()
        match = re.search(r"serving on (http://[^ ,]+)", line)
        assert match, (line, self.stderr)
        self.url = match.group(1)
        return self.url

    async def wait_for_log(self, pattern: str) -> re.Match[str]:
        """The first stderr line that ``pattern`` (a regular expression) is found in."""
        async def seen() -> re.Match[str]:
            while True:
                for line in self.stderr:
                    if match := re.search(pattern, line):
                        return match
                self._changed.clear()
                await self._changed.wait()

        result: re.Match[str] = await guarded(seen())
        return result

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def exit_code(self) -> int:
        code: int = await guarded(self.process.wait())
        await guarded(self._stderr_task)
        return code


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[ServerSentEvent]:
    """The events of a streamed response, each as soon as its bytes arrive."""
    decoder = SSEDecoder()
    async for chunk in response.content.iter_any():
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event


def assert_clean_exit(code: int, stderr: list[str]) -> None:
    text = "".join(stderr)
    assert code == 0, text
    for problem in ("Traceback", "Task was destroyed but it is pending", "was never awaited"):
        assert problem not in text, text
