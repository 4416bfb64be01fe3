"""Many workers on one port: ``tokenstream serve --workers 2``, and gunicorn's aiohttp worker.

Real processes on free ports. Nothing asserts how long anything took: each test waits on
what the server prints or answers, with ``GUARD_S`` as the bound that only a broken server
reaches. Which worker takes a connection is the kernel's choice (``SO_REUSEPORT`` hashes
the connection's addresses), so the tests open connections until both workers have some.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from relhelp import GUARD_S, ServerProcess, assert_clean_exit, guarded, sse_events

from tokenstream.sse.parser import ServerSentEvent

from support import scripted_reply

pytestmark = pytest.mark.slow

PROFILES = {
    # a reply of ~40 tokens takes a few seconds: long enough to be in flight at a signal
    "walk": {"tokens_per_second": 15, "ttft_ms": 0, "jitter": 0},
    "fast": {"tokens_per_second": None, "ttft_ms": 0, "jitter": 0},
}
MAX_CONNECTIONS = 64
"""Connections a test opens at most to reach both workers (all on one: about 2**-63)."""


def _config(tmp_path: Path, **server: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "server": {"port": 0, "heartbeat_s": 0, "shutdown_grace_s": GUARD_S, **server},
        "profiles": PROFILES,
    }))
    return path


def _environ() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDEVMODE": "1"}
    for name in ("TOKENSTREAM_API_KEYS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


@asynccontextmanager
async def _running(command: list[str], *, stdout: bool = True,
                   env: dict[str, str] | None = None) -> AsyncIterator[ServerProcess]:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env or _environ(),
        start_new_session=True,  # so that the cleanup below can end the workers too
    )
    server = ServerProcess(process)
    try:
        yield server
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def workers(tmp_path: Path, count: int = 2) -> Any:
    return _running([sys.executable, "-m", "tokenstream", "serve",
                     "--config", str(_config(tmp_path)), "--workers", str(count)])


async def _health(url: str) -> dict[str, Any]:
    """``/healthz`` over a new connection, which the kernel gives to either worker."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, \
            http.get(url + "/healthz") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def _every_worker(url: str, count: int = 2) -> dict[int, dict[str, Any]]:
    """The latest ``/healthz`` of each worker, by index."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(MAX_CONNECTIONS):
        health = await _health(url)
        seen[health["worker"]["index"]] = health
        if len(seen) == count:
            return seen
    raise AssertionError(f"only workers {sorted(seen)} answered {MAX_CONNECTIONS} connections")


class OpenStream:
    """A stream whose response is open and whose first event has arrived."""

    def __init__(self, session: aiohttp.ClientSession, response: aiohttp.ClientResponse,
                 events: AsyncIterator[ServerSentEvent], first: ServerSentEvent) -> None:
        self.session = session
        self.response = response
        self.events = events
        self.first = first

    @classmethod
    async def open(cls, url: str, prompt: str = "hello") -> OpenStream:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        response = await session.get(
            url + f"/v1/stream?prompt={prompt}&format=openai&profile=walk"
        )
        events = sse_events(response)
        return cls(session, response, events, await guarded(anext(events)))

    async def rest(self) -> list[ServerSentEvent]:
        try:
            return [event async for event in self.events]
        finally:
            self.response.release()
            await self.session.close()


async def test_sigterm_lets_the_streams_on_every_worker_finish(tmp_path: Path) -> None:
    async with workers(tmp_path) as server:
        url = await server.started()
        streams: list[OpenStream] = []
        try:
            while True:  # open streams until both workers are sending some
                streams.append(await guarded(OpenStream.open(url)))
                busy = await _every_worker(url)
                if all(health["active_streams"] >= 1 for health in busy.values()):
                    break
                assert len(streams) < MAX_CONNECTIONS, busy
            server.process.send_signal(signal.SIGTERM)
            await server.wait_for_log("SIGTERM received: stopping 2 workers")
            replies = await guarded(asyncio.gather(*(stream.rest() for stream in streams)))
        finally:
            for stream in streams:
                await stream.session.close()
        for stream, rest in zip(streams, replies, strict=True):
            assert rest[-1].data == "[DONE]"
            chunks = [json.loads(event.data) for event in [stream.first, *rest[:-1]]]
            assert all("error" not in chunk for chunk in chunks)
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert_clean_exit(await server.exit_code(), server.stderr)
    log = "".join(server.stderr)
    for index in (0, 1):
        assert f"worker {index} tokenstream.server.serve: the supervisor stops its workers" in log
        assert re.search(rf"worker {index} \(pid \d+\) exited with code 0", log), log
    assert "ended" not in log  # no stream was cut at the end of the grace period
    assert "restarting" not in log


async def test_a_second_sigterm_ends_the_streams_and_a_workers_own_signal_is_no_second(
    tmp_path: Path,
) -> None:
    async with workers(tmp_path) as server:
        url = await server.started()
        stream = await guarded(OpenStream.open(url, "long"))  # longer than the test
        try:
            busy = await _every_worker(url)
            worker = next(h["worker"] for h in busy.values() if h["active_streams"])
            # as systemd's control-group stop or a terminal's Ctrl-C: the worker is signalled
            # itself and by its supervisor, and still lets its stream finish...
            os.kill(worker["pid"], signal.SIGTERM)
            server.process.send_signal(signal.SIGTERM)
            await server.wait_for_log("SIGTERM received: stopping 2 workers")
            await server.wait_for_log(rf"worker {worker['index']} .*: shutting down")
            # ... until the supervisor's second signal
            server.process.send_signal(signal.SIGTERM)
            rest = await guarded(stream.rest())
        finally:
            await stream.session.close()
        assert rest[-1].data == "[DONE]"
        assert json.loads(rest[-2].data)["error"]["code"] == "server_shutting_down"
        assert_clean_exit(await server.exit_code(), server.stderr)
    log = "".join(server.stderr)
    assert "hurries its workers" in log
    assert "SIGTERM received again: ending" not in log  # the worker's own SIGTERM was its first


async def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(
    tmp_path: Path,
) -> None:
    async with workers(tmp_path) as server:
        url = await server.started()
        before = await _every_worker(url)
        killed = before[0]["worker"]["pid"]
        os.kill(killed, signal.SIGKILL)
        await server.wait_for_log(rf"worker 0 \(pid {killed}\) was killed by SIGKILL; restarting")
        # the port answers every new connection: worker 1, or worker 0 once restarted
        for _ in range(8):
            health = await _health(url)
            assert health["worker"]["pid"] != killed

        async def restarted() -> int:
            while True:  # until the new worker 0 listens and answers
                health = await _health(url)
                if health["worker"]["index"] == 0:
                    pid: int = health["worker"]["pid"]
                    return pid

        assert await guarded(restarted()) != killed
        assert (await _every_worker(url))[1]["worker"]["pid"] == before[1]["worker"]["pid"]
        server.process.send_signal(signal.SIGTERM)
        assert_clean_exit(await server.exit_code(), server.stderr)


def _samples(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def test_metrics_add_up_every_worker(tmp_path: Path) -> None:
    async with workers(tmp_path) as server:
        url = await server.started()
        words = "one two three four five"
        query = {"prompt": words, "source": "echo", "profile": "fast"}
        connector = aiohttp.TCPConnector(force_close=True)
        streams = 0
        async with aiohttp.ClientSession(connector=connector) as http:
            while True:  # streams over new connections until both workers have sent some
                async with http.get(url + "/v1/stream", params=query) as response:
                    assert response.status == 200
                    await response.read()
                streams += 1
                counts = {index: health["streams_completed"]
                          for index, health in (await _every_worker(url)).items()}
                if all(counts.values()):
                    break
                assert streams < MAX_CONNECTIONS, counts
            assert sum(counts.values()) == streams
            # each worker copies its numbers to the shared files every second: scrape until
            # both are in (at most two scrapes in a working server)
            expected = {
                "tokenstream_streams_started_total": streams,
                "tokenstream_streams_completed_total": streams,
                "tokenstream_events_sent_total": streams * len(words.split()),
                "tokenstream_active_streams": 0,
                "tokenstream_pacing_lateness_seconds_count": 0,  # unpaced: no deadlines
            }

            async def summed() -> dict[str, float]:
                while True:
                    async with http.get(url + "/metrics") as response:
                        samples = _samples(await response.text())
                    if all(samples.get(name) == value for name, value in expected.items()):
                        return samples
                    await asyncio.sleep(0.2)

            samples = await guarded(summed())
        assert "process_cpu_seconds_total" not in samples  # per process: not added up
        server.process.send_signal(signal.SIGTERM)
        assert_clean_exit(await server.exit_code(), server.stderr)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_gunicorn_with_aiohttps_worker_serves_a_stream(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    port = _free_port()
    command = [
        sys.executable, "-m", "gunicorn", "tokenstream.server.app:gunicorn_app()",
        "-k", "aiohttp.GunicornWebWorker", "-w", "2", "-b", f"127.0.0.1:{port}",
        "-c", "python:tokenstream.server.gunicorn_conf", "--graceful-timeout", str(int(GUARD_S)),
    ]
    env = {**_environ(), "TOKENSTREAM_CONFIG": str(_config(tmp_path))}
    async with _running(command, stdout=False, env=env) as server:
        url = f"http://127.0.0.1:{port}"
        await server.wait_for_log(r"Listening at: http://127\.0\.0\.1")

        async def both_pids() -> None:
            pids: set[int] = set()
            while len(pids) < 2:
                try:
                    pids.add((await _health(url))["worker"]["pid"])
                except aiohttp.ClientConnectionError:  # a worker is still loading
                    await asyncio.sleep(0.1)

        await guarded(both_pids())
        stream = await guarded(OpenStream.open(url))
        rest = await guarded(stream.rest())
        assert rest[-1].data == "[DONE]"
        chunks = [json.loads(event.data) for event in [stream.first, *rest[:-1]]]
        text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
        assert text == scripted_reply("hello")
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        health = await _health(url)
        assert health["worker"]["index"] is None
        server.process.send_signal(signal.SIGTERM)
        assert await server.exit_code() == 0
