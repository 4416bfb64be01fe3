"""Two ``tokenstream serve`` processes sharing one Redis (``store: redis://...``), as two
machines behind a load balancer would: a stream started on the first resumes on the second,
byte for byte; when the first dies while the second follows its stream, the second ends the
body instead of waiting for ever.

Real processes and a real redis-server on free ports; every wait is bounded by ``GUARD_S``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from relhelp import GUARD_S, ServerProcess, guarded, parse_sse

from redis_support import RedisServer, redis_server
from resume_support import cut
from support import scripted_reply

pytestmark = pytest.mark.slow
__all__ = ["redis_server"]  # the fixture

LONG = scripted_reply("long")  # 182 tokens: 3.6 s at 50 tokens/s
QUERY = {"prompt": "Give me a long answer", "format": "json", "profile": "steady"}


@asynccontextmanager
async def _serve(config: Path) -> AsyncIterator[ServerProcess]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TOKENSTREAM_API_KEYS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenstream", "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    server = ServerProcess(process)
    try:
        await server.started()
        yield server
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _two_servers(stack: AsyncExitStack, tmp_path: Path, redis: RedisServer
                       ) -> tuple[ServerProcess, ServerProcess]:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"port": 0, "heartbeat_s": 0},
        "store": redis.url,
        "resume": {"linger_s": GUARD_S},
    }))
    first = await stack.enter_async_context(_serve(config))
    second = await stack.enter_async_context(_serve(config))
    return first, second


async def _cut(session: aiohttp.ClientSession, url: str) -> tuple[str, bytes]:
    """A stream on ``url`` reset by the server after half a second: its id, the events."""
    params = {**QUERY, "fault": "reset@0.5s"}
    return await cut(session, "GET", url + "/v1/stream", params=params)


def _resume(session: aiohttp.ClientSession, server: ServerProcess, before: bytes) -> Any:
    """``GET /v1/stream`` on ``server`` as an EventSource reconnects after ``before``."""
    last = parse_sse(before)[-1].id or ""
    return session.get(server.url + "/v1/stream", params=QUERY, headers={"Last-Event-ID": last})


async def test_a_stream_resumes_on_another_process_byte_for_byte(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with AsyncExitStack() as stack:
        first, second = await _two_servers(stack, tmp_path, redis_server)
        async with aiohttp.ClientSession() as session:
            stream_id, before = await guarded(_cut(session, first.url))
            async with _resume(session, second, before) as response:
                assert response.status == 200
                rest = await guarded(response.read())
    events = parse_sse(before + rest)
    assert [e.id for e in events] == [f"{stream_id}:{n}" for n in range(1, len(events) + 1)]
    assert events[-1].data == "[DONE]"
    assert "".join(json.loads(e.data)["token"] for e in events[:-1]) == LONG


async def test_a_reader_elsewhere_ends_when_the_owner_dies(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with AsyncExitStack() as stack:
        first, second = await _two_servers(stack, tmp_path, redis_server)
        async with aiohttp.ClientSession() as session:
            _, before = await guarded(_cut(session, first.url))
            async with _resume(session, second, before) as response:
                assert response.status == 200
                await guarded(response.content.readuntil(b"\n\n"))  # following the stream
                first.process.send_signal(signal.SIGKILL)
                try:
                    rest = await guarded(response.read())
                except aiohttp.ClientPayloadError:
                    rest = b""  # a reset is an end too
    assert b"[DONE]" not in rest  # the reply was cut short, and the reader was let go
