"""Micro-benchmark: the Python cost of one paced event, without the socket.

N streams of a 200-token reply at 50 tokens/s (the fidelity scenario's streams), each played
out by ``tokenstream.engine.playout.Playout`` on the shared ``BucketClock``, written to a sink that
only counts. What is left is what the server does per event besides ``send(2)``: the timer
pass, the schedule, the wire format, the lateness histogram and re-arming the timer.

    python scripts/bench_playout.py --streams 1000          # CPU µs per event (noisy)

CPU time on a shared machine moves by 10-20 % between runs; instruction counts do not.
To compare two versions, count instructions with valgrind (about a minute each) and
subtract a run with no streams, which leaves the start-up out:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python scripts/bench_playout.py --streams 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python scripts/bench_playout.py --streams 100

(instructions per event = (second "Collected" - first) / (100 * 200)).

``--floor`` plays the same streams through a minimal timer pass instead, for comparison:
the same wire format, lateness histogram and per-stream task, but the buckets hold the
streams themselves, the pieces are indexed instead of generated, and no object is made per
event but its bytes. The difference is what the playout's layering costs per event.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from bisect import bisect_left
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokenstream.dialects.openai_chat import OpenAIChunkFormat
from tokenstream.engine.accounting import StreamStats
from tokenstream.engine.lateness import LatenessHistogram
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.playout import Playout
from tokenstream.engine.reply import ReplyProgress, scheduled_reply
from tokenstream.engine.scheduler import BucketClock
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.sse.transport import BATCH_BYTES


class CountingSink:
    """Stands in for ``SSEResponse``: takes every write at once and counts it."""

    batch_bytes = BATCH_BYTES

    def __init__(self, clock: BucketClock) -> None:
        self.clock = clock
        self.last_write = clock.now()
        self.writes = 0

    def write_nowait(self, data: bytes, now: float | None = None) -> bool:
        self.writes += 1
        self.last_write = self.clock.now() if now is None else now
        return True

    async def send(self, data: bytes) -> None:
        self.writes += 1


async def run(streams: int, tokens: int, rate: float, ramp: float) -> None:
    tokenizer = Tokenizer(load_encoding())
    text = " word" * tokens  # one token per word
    clock = BucketClock()
    profile = PacingProfile(tokens_per_second=rate, ttft_ms=0, jitter=0)
    stats = StreamStats()
    lateness = LatenessHistogram()
    rng = random.Random(1)

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        events = scheduled_reply(text, tokenizer=tokenizer, profile=profile, start=clock.now(),
                                 max_tokens=None, progress=ReplyProgress())
        wire = OpenAIChunkFormat(model="tokenstream-1", include_usage=False)
        playout = Playout(CountingSink(clock), clock, events, wire, stats,  # type: ignore[arg-type]
                          lateness=lateness)
        await playout.run()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(rng.uniform(0, ramp)) for _ in range(streams)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    events = stats.events_sent
    per_event = f"{cpu / events * 1e6:.2f} µs CPU per event" if events else "no events"
    print(f"{streams} streams, {events} events, {cpu:.2f} s CPU in {wall:.2f} s: {per_event}")


class _FloorStream:
    __slots__ = ("deadline", "done", "index", "wire")

    def __init__(self, wire: OpenAIChunkFormat, start: float, done: asyncio.Future[None]) -> None:
        self.wire = wire
        self.deadline = start
        self.index = 0
        self.done = done


async def floor(streams: int, tokens: int, rate: float, ramp: float) -> None:
    """The same streams as ``run``, through the least a timer pass can do per event."""
    tokenizer = Tokenizer(load_encoding())
    pieces = tokenizer.shared_pieces(" word" * tokens)
    interval = 1.0 / rate
    loop = asyncio.get_running_loop()
    sink = CountingSink(BucketClock())
    lateness = LatenessHistogram()
    bounds, counts = lateness.bounds, lateness.counts
    buckets: dict[int, list[_FloorStream]] = {}
    sent = [0]
    rng = random.Random(1)

    def enter(stream: _FloorStream) -> None:
        bucket = math.ceil(stream.deadline * 1000 - 1e-6)
        waiting = buckets.get(bucket)
        if waiting is None:
            buckets[bucket] = [stream]
            loop.call_at(bucket / 1000, fire, bucket)
        else:
            waiting.append(stream)

    def fire(bucket: int) -> None:
        entries = buckets.pop(bucket)
        for stream in entries:
            now = loop.time()
            sink.write_nowait(stream.wire.piece(pieces[stream.index]), now)
            counts[bisect_left(bounds, now - stream.deadline)] += 1
            stream.index += 1
            if stream.index < len(pieces):
                stream.deadline += interval
                enter(stream)
            else:
                stream.done.set_result(None)
        sent[0] += len(entries)

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        wire = OpenAIChunkFormat(model="tokenstream-1", include_usage=False)
        done = loop.create_future()
        enter(_FloorStream(wire, loop.time(), done))
        await done

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(rng.uniform(0, ramp)) for _ in range(streams)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    events = sent[0]
    per_event = f"{cpu / events * 1e6:.2f} µs CPU per event" if events else "no events"
    print(f"{streams} streams, {events} events, {cpu:.2f} s CPU in {wall:.2f} s: {per_event}"
          " (floor)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds over which streams start")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--floor", action="store_true",
                        help="a minimal timer pass instead of the playout, for comparison")
    args = parser.parse_args()
    coroutine = (floor if args.floor else run)(args.streams, args.tokens, args.rate, args.ramp)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)


if __name__ == "__main__":
    main()
