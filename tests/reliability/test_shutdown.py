"""Graceful shutdown of a real ``tokenstream serve`` process on SIGTERM and SIGINT.

Each test waits on what the server prints and streams, never on the wall clock; the grace
periods are real (that is what is under test) but nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import yaml
from relhelp import GUARD_S, ServerProcess, assert_clean_exit, guarded, sse_events

pytestmark = pytest.mark.slow

LONG_STREAM = "/v1/stream?prompt=long&format=openai&profile=crawl"


@asynccontextmanager
async def serve(tmp_path: Path, *args: str, **server: object) -> AsyncIterator[ServerProcess]:
    config = {
        "server": {"port": 0, "heartbeat_s": 0, **server},
        "profiles": {"crawl": {"tokens_per_second": 5, "ttft_ms": 0, "jitter": 0},
                     "walk": {"tokens_per_second": 25, "ttft_ms": 0, "jitter": 0}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDEVMODE": "1"}
    env.pop("TOKENSTREAM_API_KEYS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenstream", "serve", "--config", str(path), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    server_process = ServerProcess(process)
    try:
        yield server_process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_streams_past_the_grace_period_end_with_a_final_event_and_the_sentinel(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with serve(tmp_path, shutdown_grace_s=0.2) as server:
        url = await server.started()
        async with aiohttp.ClientSession() as session, session.get(url + LONG_STREAM) as response:
            events = sse_events(response)
            first = await guarded(anext(events))
            assert json.loads(first.data)["object"] == "chat.completion.chunk"
            server.send(signum)
            rest = [event async for event in events]  # the stream runs ~40 s unless cut
        assert rest[-1].data == "[DONE]"
        final = json.loads(rest[-2].data)
        assert final["error"]["code"] == "server_shutting_down"
        assert all("error" not in json.loads(e.data) for e in rest[:-2])
        assert_clean_exit(await server.exit_code(), server.stderr)
    assert any("ended 1 streams" in line for line in server.stderr)


async def test_streams_that_finish_within_the_grace_period_complete_and_no_new_ones_start(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, shutdown_grace_s=GUARD_S) as server:
        url = await server.started()
        path = "/v1/stream?prompt=hello&format=openai&profile=walk"
        async with aiohttp.ClientSession() as session, session.get(url + path) as response:
            events = sse_events(response)
            await guarded(anext(events))
            server.send(signal.SIGTERM)
            await server.wait_for_log("SIGTERM received")
            # the listening socket is closed: a new client cannot connect
            with pytest.raises(aiohttp.ClientConnectionError):
                async with aiohttp.ClientSession() as other:
                    await other.get(url + "/healthz")
            rest = [event async for event in events]
        assert rest[-1].data == "[DONE]"
        chunks = [json.loads(event.data) for event in rest[:-1]]
        assert all("error" not in chunk for chunk in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert_clean_exit(await server.exit_code(), server.stderr)
    assert not any("ended" in line and "streams" in line for line in server.stderr)


async def test_a_second_signal_ends_the_grace_period(tmp_path: Path) -> None:
    async with serve(tmp_path, shutdown_grace_s=GUARD_S * 10) as server:
        url = await server.started()
        async with aiohttp.ClientSession() as session, session.get(url + LONG_STREAM) as response:
            events = sse_events(response)
            await guarded(anext(events))
            server.send(signal.SIGINT)
            await server.wait_for_log("SIGINT received")
            server.send(signal.SIGINT)
            rest = [event async for event in events]
        assert json.loads(rest[-2].data)["error"]["code"] == "server_shutting_down"
        assert_clean_exit(await server.exit_code(), server.stderr)


async def test_idle_server_exits_zero_at_once(tmp_path: Path) -> None:
    async with serve(tmp_path) as server:
        await server.started()
        server.send(signal.SIGTERM)
        assert_clean_exit(await server.exit_code(), server.stderr)


async def test_public_bind_without_keys_prints_a_warning(tmp_path: Path) -> None:
    async with serve(tmp_path, "--host", "0.0.0.0") as server:
        await server.started()
        await server.wait_for_log(r"WARNING: tokenstream is listening on 0\.0\.0\.0")
        server.send(signal.SIGTERM)
        assert_clean_exit(await server.exit_code(), server.stderr)


async def test_loopback_bind_prints_no_warning(tmp_path: Path) -> None:
    async with serve(tmp_path) as server:
        await server.started()
        server.send(signal.SIGTERM)
        assert_clean_exit(await server.exit_code(), server.stderr)
    assert not any("WARNING" in line for line in server.stderr)


async def test_a_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = str(taken.getsockname()[1])
        async with serve(tmp_path, "--port", port) as server:
            code = await server.exit_code()
    finally:
        taken.close()
    assert code == 1
    text = "".join(server.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in text and "Traceback" not in text
