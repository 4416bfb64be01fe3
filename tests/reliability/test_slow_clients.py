"""Clients that stop reading, reset, or leave: the stream ends and nothing stays behind."""

from __future__ import annotations

import asyncio
import logging

import pytest
from relhelp import (
    FAST,
    HELD_PROFILE,
    get_request,
    guarded,
    make_app,
    open_socket_count,
    raw_connect,
    read_to_end,
    read_until,
    reset,
    running,
    spin_until,
)

from tokenstream.engine.clock import LoopClock
from tokenstream.engine.scheduler import BucketClock
from tokenstream.server.app import STATE

BIG_REPLY = "Streaming fills buffers when nobody reads them. " * 8000  # ~380 kB, ~70k tokens


def _server_connections(runner: object) -> int:
    server = runner.server  # type: ignore[attr-defined]
    return len(server.connections)


async def test_client_that_never_reads_is_cut_off_after_send_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "tokenstream")
    max_buffered = 4096
    app = make_app(
        {"send_timeout_s": 0.05, "max_buffered_bytes": max_buffered},
        clock=LoopClock(),
        responses={"default_reply": BIG_REPLY, "rules": []},
        profiles={"flat": FAST},
        default_profile="flat",
    )
    state = app[STATE]
    async with running(app, sndbuf=4096) as (_, port, runner):
        sockets_before = open_socket_count()
        client = await raw_connect(port, rcvbuf=4096)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, get_request("/v1/stream?prompt=x&format=json"))
        # the client reads nothing; the server's writes block, then time out
        await spin_until(lambda: state.stats.started == 1)
        await guarded(state.streams.wait_idle())
        assert state.stats.stalled == 1
        assert state.stats.disconnected == 1
        assert state.stats.completed == 0
        assert state.stats.active == 0
        await spin_until(lambda: _server_connections(runner) == 0)
        # the server aborted the connection: the client gets what was sent, then EOF or RST
        received = await read_to_end(client)
        assert b"[DONE]" not in received
        client.close()
        await spin_until(lambda: open_socket_count() == sockets_before)
    stalled = [r for r in caplog.records if getattr(r, "access", {}).get("outcome") == "stalled"]
    assert len(stalled) == 1
    # the queue never grew past the cap by more than one write (a batch of events due together
    # is at most max_buffered // 8 = 512 bytes here)
    assert 0 < stalled[0].access["buffered_bytes"] <= max_buffered + 512


async def test_client_that_reads_slowly_but_steadily_is_not_cut_off() -> None:
    app = make_app(
        {"send_timeout_s": 5, "max_buffered_bytes": 4096},
        clock=LoopClock(),
        responses={"default_reply": "steady " * 4000, "rules": []},
        profiles={"flat": FAST},
        default_profile="flat",
    )
    state = app[STATE]
    async with running(app, sndbuf=4096) as (_, port, _runner):
        client = await raw_connect(port, rcvbuf=4096)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, get_request("/v1/stream?prompt=x"))
        data = b""
        while b"[DONE]" not in data:
            chunk = await guarded(loop.sock_recv(client, 512))  # small reads, one at a time
            assert chunk
            data += chunk
        client.close()
    assert state.stats.completed == 1
    assert state.stats.stalled == 0


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_client_that_leaves_mid_stream_stops_the_stream(how: str) -> None:
    clock = BucketClock()
    slow = {**HELD_PROFILE, "tokens_per_second": 0.01}  # the next event is 100 s away
    app = make_app(clock=clock, profiles={"slow": slow}, default_profile="slow")
    state = app[STATE]
    async with running(app) as (_, port, runner):
        tasks_before = len(asyncio.all_tasks())
        client = await raw_connect(port)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, get_request("/v1/stream?prompt=x"))
        assert b"data: " in await read_until(client, b"\n\n")  # the first event
        assert state.stats.active == 1
        if how == "reset":
            reset(client)
        else:
            client.close()
        # the stream is waiting for its next event: only the disconnect can end it now
        await guarded(state.streams.wait_idle())
        assert clock.pending_timers == 0  # its timer went with it
        assert state.stats.disconnected == 1
        await spin_until(lambda: _server_connections(runner) == 0)
        await spin_until(lambda: len(asyncio.all_tasks()) <= tasks_before)


async def _cycle(kind: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    client = await raw_connect(port)
    try:
        if kind == "connect_only":
            return
        if kind == "partial_headers":
            await loop.sock_sendall(client, b"GET /v1/stream?prompt=hi HTTP/1.1\r\nHost: x\r\n")
            return
        if kind == "partial_body":
            await loop.sock_sendall(
                client,
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: 500\r\n\r\n{\"model\": \"m\", ",
            )
            return
        await loop.sock_sendall(client, get_request("/v1/stream?prompt=hello&format=openai"))
        if kind == "abort_after_first_event":
            await read_until(client, b"data:")
        elif kind == "reset_after_first_event":
            await read_until(client, b"data:")
            reset(client)
        elif kind == "complete":
            await read_until(client, b"[DONE]")
    finally:
        if client.fileno() != -1:
            client.close()


CYCLE_KINDS = [
    "connect_only",
    "partial_headers",
    "partial_body",
    "abort_after_first_event",
    "reset_after_first_event",
    "complete",
]


async def test_open_then_abort_cycles_leave_nothing_behind() -> None:
    """The soak in small: after 300 mixed cycles, tasks, sockets and streams are at baseline."""
    app = make_app(
        {"heartbeat_s": 15},
        clock=LoopClock(),
        profiles={"quick": {**FAST, "tokens_per_second": 2000}},
        default_profile="quick",
    )
    state = app[STATE]
    async with running(app) as (_, port, runner):
        for kind in CYCLE_KINDS:  # warm up every path once
            await _cycle(kind, port)
        await spin_until(lambda: _server_connections(runner) == 0 and state.stats.active == 0)
        tasks_before = len(asyncio.all_tasks())
        sockets_before = open_socket_count()

        kinds = CYCLE_KINDS * 50
        for start in range(0, len(kinds), 20):  # 20 clients at a time
            await asyncio.gather(*(_cycle(kind, port) for kind in kinds[start : start + 20]))

        await spin_until(lambda: _server_connections(runner) == 0 and state.stats.active == 0)
        await spin_until(lambda: len(asyncio.all_tasks()) <= tasks_before)
        await spin_until(lambda: open_socket_count() <= sockets_before)
        assert len(state.streams) == 0
        assert state.stats.started >= 150
