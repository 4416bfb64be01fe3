"""Garbage-collection pauses of the server while streams come and go.

The fidelity benchmark opens each stream once; a real server sees streams end and new ones
start all the time, and that is when the cyclic garbage collector has the most to do: the
objects of new streams pass through its young generations, and whatever a finished stream
left in a reference cycle waits for a full collection. This script keeps ``--streams``
clients busy for ``--duration`` seconds, each opening a paced stream (``--tokens`` tokens
at ``--rate`` tokens/s) as soon as its last one ended, and prints every collection the
server made meanwhile, per generation: how many, the longest, the total. A collection stops
every stream of the process for as long as it takes.

    python scripts/gc_pauses.py --streams 1000 --duration 30

The server runs as ``tokenstream serve`` (on uvloop when it is installed, ``--loop``) with
a ``gc.callbacks`` hook that times each collection, pinned to CPU 0 and the clients to the
others when the machine has two or more CPUs (as in scripts/bench.py). Collections at
start-up (``serve`` collects and freezes what it loaded) are left out: only those between
the first client's start and the last one's end count.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from script_support import free_port

ROOT = Path(__file__).resolve().parent.parent

_SERVER = """
import atexit, gc, json, sys, time
log, started = [], [0.0]
def timed(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        log.append((time.monotonic(), info["generation"], time.perf_counter() - started[0]))
gc.callbacks.append(timed)
out = sys.argv.pop()
atexit.register(lambda: json.dump(log, open(out, "w")))
from tokenstream.cli import main
sys.exit(main(sys.argv[1:]))
"""

_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


async def _clients(port: int, streams: int, duration: float, path: str) -> tuple[int, int]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    end = time.monotonic() + duration
    done = failed = 0

    async def slot() -> None:
        nonlocal done, failed
        await asyncio.sleep(random.uniform(0, 1))  # the first streams start over a second
        while time.monotonic() < end:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await reader.read(65536)
                while await reader.read(65536):
                    pass
                writer.close()
                done += 1
                failed += not head.startswith(b"HTTP/1.1 200")
            except OSError:
                failed += 1

    await asyncio.gather(*(slot() for _ in range(streams)))
    return done, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="the server's and the clients' event loop (auto: uvloop if installed)")
    args = parser.parse_args()
    loop = args.loop
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"

    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and shutil.which("taskset") is not None
    workdir = Path(tempfile.mkdtemp(prefix="gc-pauses-"))
    reply = " ".join((_WORDS * (args.tokens // len(_WORDS) + 1))[: args.tokens])
    config = workdir / "config.json"
    config.write_text(json.dumps({
        "server": {"max_concurrent_streams": 0, "max_stream_duration_s": 0},
        "responses": {"rules": [{"match": "^gc$", "reply": reply}]},
    }))
    port = free_port()
    log_path = workdir / "collections.json"
    argv = [sys.executable, "-c", _SERVER, "serve", "--port", str(port), "--config", str(config),
            "--loop", loop, "--log-level", "WARNING", str(log_path)]
    if pin:
        argv = ["taskset", "-c", str(cpus[0]), *argv]
        os.sched_setaffinity(0, cpus[1:])
    server_log = workdir / "server.log"  # a file, not a pipe: a full pipe would stall it
    with server_log.open("wb") as log_file:
        server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        for _ in range(300):
            if server.poll() is not None:
                errors = server_log.read_text(errors="replace")
                raise SystemExit(f"gc_pauses: the server exited at start-up:\n{errors}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("gc_pauses: the server did not answer /healthz within 30 s")
        path = "/v1/stream?" + urlencode({"prompt": "gc", "format": "openai",
                                          "tokens_per_second": f"{args.rate:g}", "jitter": "0"})
        clients = _clients(port, args.streams, args.duration, path)
        started = time.monotonic()
        if loop == "uvloop":
            import uvloop

            done, failed = uvloop.run(clients)
        else:
            done, failed = asyncio.run(clients)
        ended = time.monotonic()
    finally:
        server.terminate()
        server.wait(timeout=30)
    collections = [(gen, pause) for at, gen, pause in json.loads(log_path.read_text())
                   if started <= at <= ended]
    print(f"{args.streams} clients for {args.duration:g} s: {done} streams of {args.tokens} "
          f"tokens at {args.rate:g}/s, {failed} failed; server on CPU "
          f"{cpus[0] if pin else 'any'}")
    print("generation  collections  longest ms  total ms  over 5 ms")
    for generation in (0, 1, 2):
        pauses = sorted(p * 1e3 for g, p in collections if g == generation)
        longest = f"{pauses[-1]:.1f}" if pauses else "-"
        over = sum(p > 5 for p in pauses)
        print(f"{generation:>10}  {len(pauses):>11}  {longest:>10}  {sum(pauses):>8.0f}  {over:>9}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
