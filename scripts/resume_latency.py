"""Resume latency: from sending a reconnect to the first missed event's bytes.

For each store (``memory``: one server, the reconnect goes back to it; ``redis``: two
servers sharing a redis-server this script starts, the reconnect goes to the other one),
``--streams`` streams (``--concurrency`` at a time) are cut by the server mid-reply (the
``reset@<s>`` fault), and ``--gap-ms`` later each reconnects with ``Last-Event-ID``: the
time from sending that request to the first bytes of the body (events the reply made while
the client was away) is measured, and the rest is read and checked (no gap, no duplicate).
The baseline, in the same run and against the same server: a fresh stream's time to first
byte with ``ttft_ms=0``.

    flock /tmp/bench.lock python scripts/resume_latency.py --streams 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PARAMS = {"prompt": "tell me a story", "tokens_per_second": "50", "ttft_ms": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port}")


@contextmanager
def _servers(store: str, count: int, directory: Path) -> Iterator[list[str]]:
    """``count`` tokenstream servers (own processes) using ``store``: their base URLs."""
    config = directory / f"{store.partition(':')[0]}.yaml"
    config.write_text(f"store: {store}\nserver:\n  log_level: WARNING\n", "utf-8")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for _ in range(count):
            port = _free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "tokenstream", "serve", "--config", str(config),
                 "--port", str(port), "--log-level", "WARNING"],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL,
            )
            processes.append(process)
            _wait_port(port, process, "tokenstream serve")
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


@contextmanager
def _redis(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(directory)], stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, process, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(10)


async def _fresh(session: aiohttp.ClientSession, base: str) -> float:
    """A fresh stream's time to its first byte."""
    started = time.perf_counter()
    async with session.get(base + "/v1/stream", params=PARAMS) as response:
        await response.content.readany()
        first = time.perf_counter() - started
        await response.read()
    return first


async def _cut_and_resume(
    session: aiohttp.ClientSession, owner: str, other: str, cut_s: float, gap_s: float,
) -> float:
    got = b""
    try:
        async with session.get(owner + "/v1/stream",
                               params={**PARAMS, "fault": f"reset@{cut_s:.3f}s"}) as response:
            async for chunk in response.content.iter_any():
                got += chunk
    except aiohttp.ClientError:
        pass
    got = got[: got.rfind(b"\n\n") + 2]  # the whole events
    last_id = [line for line in got.split(b"\n") if line.startswith(b"id: ")][-1][4:].decode()
    stream_id, _, seq = last_id.rpartition(":")
    await asyncio.sleep(gap_s)  # the reply goes on meanwhile: these are the missed events
    started = time.perf_counter()
    async with session.get(other + "/v1/stream", params=PARAMS,
                           headers={"Last-Event-ID": last_id}) as response:
        if response.status != 200:
            raise RuntimeError(f"reconnect answered {response.status}")
        first = await response.content.readany()
        elapsed = time.perf_counter() - started
        rest = first + await response.read()
    expected = int(seq) + 1
    if not rest.startswith(f"id: {stream_id}:{expected}\n".encode()):
        raise RuntimeError(f"the resumed stream did not start at event {expected}")
    ids = [line for line in rest.split(b"\n") if line.startswith(b"id: ")]
    if ids != [f"id: {stream_id}:{n}".encode() for n in range(expected, expected + len(ids))]:
        raise RuntimeError("a gap or a duplicate in the resumed stream")
    return elapsed


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"p50 {statistics.median(ordered) * 1000:.2f} ms  p99 {p99 * 1000:.2f} ms  "
            f"max {ordered[-1] * 1000:.2f} ms  (n={len(ordered)})")


async def _measure(urls: list[str], streams: int, concurrency: int, gap_s: float
                   ) -> tuple[list[float], list[float]]:
    owner, other = urls[0], urls[-1]
    gate = asyncio.Semaphore(concurrency)
    resumes: list[float] = []
    fresh: list[float] = []
    async with aiohttp.ClientSession() as session:
        await _fresh(session, owner)  # (warm-up: tokenizer caches, connections)

        async def one(number: int) -> None:
            async with gate:
                cut_s = 0.2 + (number % 10) * 0.03
                resumes.append(await _cut_and_resume(session, owner, other, cut_s, gap_s))
                fresh.append(await _fresh(session, other))

        await asyncio.gather(*(one(n) for n in range(streams)))
    return resumes, fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--gap-ms", type=float, default=100.0,
                        help="from the cut to the reconnect (default 100)")
    parser.add_argument("--stores", default="memory,redis")
    args = parser.parse_args()
    print(f"$ {' '.join(['python', *sys.argv])}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for store in args.stores.split(","):
            if store == "memory":
                with _servers("memory", 1, directory) as urls:
                    result = asyncio.run(
                        _measure(urls, args.streams, args.concurrency, args.gap_ms / 1000))
                where = "memory store, reconnect to the same server"
            else:
                with _redis(directory) as url, _servers(url, 2, directory) as urls:
                    result = asyncio.run(
                        _measure(urls, args.streams, args.concurrency, args.gap_ms / 1000))
                where = "redis store, reconnect to the other server"
            resumes, fresh = result
            print(f"{where}:")
            print(f"  reconnect -> first missed event  {_percentiles(resumes)}")
            print(f"  baseline: fresh stream TTFB      {_percentiles(fresh)}")


if __name__ == "__main__":
    main()
