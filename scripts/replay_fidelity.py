#!/usr/bin/env python3
"""How faithfully a replayed reply keeps its recorded timing, token by token, at the client.

One run, one machine: a fake OpenAI chat-completions upstream in this process streams
seeded replies at irregular, seeded intervals (bursts of several chunks in one write,
sub-millisecond gaps, tens of milliseconds, pauses of a few hundred), its text cut at
arbitrary characters (CJK, emoji and words split across chunks), then a tool call, after
a time to first token (150 ms).
tokenstream runs in its own process as

    tokenstream serve --upstream URL --record DIR --replay DIR --replay-on-miss upstream
                      --profile instant

so the first request for each reply is proxied live and recorded, and the next ones are
replayed from the fixture. A raw SSE client in this process (chat completions, and
Anthropic Messages: the fixture replayed in another dialect) stamps each event as its bytes
arrive (``time.perf_counter``).

- replay: each text token's arrival after the request was sent, minus its recorded arrival
  (the arrival of the upstream event that brought its last character, after tokenstream
  sent the upstream request; ``/ --speed``). This includes the request's own trip into
  tokenstream (sent, read, parsed, its fixture looked up: the replay's zero point), the
  same for every token of a reply; "aligned" takes it out: each difference less the
  reply's median difference, i.e. the timing within the reply.
- baseline, the live proxied stream of the same run: each token's arrival at the client
  minus the moment the fake upstream wrote the chunk that completed it (profile instant:
  passed on as it arrives). It includes the live path's holding back of a chunk's last
  token until the next chunk shows where it ends, which a replay does not need.
- request path: the median difference of each replayed reply (its constant part), beside
  the first token of a scripted reply sent at once (profile instant) in the same run: the
  time any reply of tokenstream takes to begin, which the replay's zero point follows.
- the server's own lateness: each replayed event's write minus its deadline, from
  tokenstream's ``/metrics`` (``tokenstream_pacing_lateness_seconds``), as the share of
  events within 0.5, 1, 2, 5 and 10 ms; and this process's own timer lateness over the run
  (1 ms sleeps): the noise the client's stamps carry.
- recording: each recorded arrival minus the upstream's write of that chunk, both counted
  from the request, aligned (the two zero points differ by the request's trip from
  tokenstream to the upstream handler).

Text and tool-call arguments are compared byte for byte with what the upstream sent.

    python scripts/replay_fidelity.py [--replies 3] [--deltas 300] [--replays 4] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tokenstream.engine.events import TextDelta
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.sources.fixtures import Fixture, read_fixture
from tokenstream.sse.parser import SSEDecoder

from script_support import free_port, machine, wait_ready

WORDS = [
    "Streaming", "changes", "how", "an", "answer", "feels", "the", "first", "tokens", "arrive",
    "at", "once", "and", "the", "rest", "flows", "at", "reading", "speed.", "你好，", "世界！",
    "流式传输", "词元", "👋", "🧑‍💻", "👩‍👩‍👧‍👦", "🇯🇵", "résumé", "naïve", "\n\n", "1234",
    "tokens/s;", "`code`", "**bold**",
]
MODEL = "fidelity-upstream"


# -- the upstream --------------------------------------------------------------------------


@dataclass
class Reply:
    """One seeded reply: text deltas and argument fragments, each with the pause before it
    (0: written with the one before)."""

    deltas: list[tuple[float, str]]
    fragments: list[tuple[float, str]]

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.deltas)

    @property
    def arguments(self) -> str:
        return "".join(text for _, text in self.fragments)


def _pause(rng: random.Random) -> float:
    draw = rng.random()
    if draw < 0.20:
        return 0.0  # a burst: in the same write as the chunk before
    if draw < 0.40:
        return rng.uniform(0.0002, 0.002)
    if draw < 0.95:
        return rng.uniform(0.005, 0.040)
    return rng.uniform(0.080, 0.300)


def seeded_reply(rng: random.Random, deltas: int) -> Reply:
    text = ""
    while len(text) < deltas * 5:
        text += rng.choice(WORDS) + rng.choice([" ", " ", " ", "", "\n"])
    cuts = sorted(rng.sample(range(1, len(text)), deltas - 1))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    arguments = json.dumps({"city": rng.choice(["Paris", "東京", "Zürich"]),
                            "days": rng.randint(1, 9), "note": "🌦 " * rng.randint(1, 3)},
                           ensure_ascii=False)
    splits = sorted(rng.sample(range(1, len(arguments)), 6))
    fragments = [arguments[a:b] for a, b in zip([0, *splits], [*splits, len(arguments)],
                                                strict=True)]
    return Reply([(_pause(rng), piece) for piece in pieces],
                 [(_pause(rng), fragment) for fragment in fragments])


def _chunk(delta: dict[str, Any] | None, finish: str | None = None,
           usage: dict[str, int] | None = None) -> bytes:
    payload: dict[str, Any] = {
        "id": "chatcmpl-fidelity", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": MODEL,
        "choices": [] if delta is None else [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


@dataclass
class Upstream:
    replies: dict[str, Reply]
    ttft: float
    """Seconds before the first chunk (a model's time to first token)."""
    writes: dict[str, list[float]] = field(default_factory=dict)
    """Per prompt: when each text delta was written (perf_counter)."""
    received: dict[str, float] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        self.received[prompt] = time.perf_counter()
        reply = self.replies[prompt]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(self.ttft)
        writes: list[float] = []
        batch = [_chunk({"role": "assistant", "content": ""})]
        batched = 0  # text deltas in ``batch``
        for pause, text in reply.deltas:
            if pause:  # the batch goes out in one write, then the pause
                await response.write(b"".join(batch))
                writes += [time.perf_counter()] * batched
                batch, batched = [], 0
                await asyncio.sleep(pause)
            batch.append(_chunk({"content": text}))
            batched += 1
        await response.write(b"".join(batch))
        writes += [time.perf_counter()] * batched
        self.writes[prompt] = writes
        start = {"index": 0, "id": "call_fidelity", "type": "function",
                 "function": {"name": "get_weather", "arguments": ""}}
        await response.write(_chunk({"tool_calls": [start]}))
        for pause, fragment in reply.fragments:
            await asyncio.sleep(pause)
            await response.write(_chunk(
                {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}))
        await response.write(_chunk({}, finish="tool_calls"))
        await response.write(_chunk(None, usage={
            "prompt_tokens": 12, "completion_tokens": 400, "total_tokens": 412}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


# -- the client ----------------------------------------------------------------------------


@dataclass
class Received:
    """What a client got: each text piece with its arrival after the request was sent."""

    pieces: list[tuple[float, str]] = field(default_factory=list)
    arguments: str = ""

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.pieces)


def _chat_event(data: dict[str, Any], at: float, got: Received) -> None:
    for choice in data.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content"):
            got.pieces.append((at, delta["content"]))
        for call in delta.get("tool_calls") or ():
            got.arguments += (call.get("function") or {}).get("arguments") or ""


def _anthropic_event(data: dict[str, Any], at: float, got: Received) -> None:
    if data.get("type") != "content_block_delta":
        return
    delta = data["delta"]
    if delta["type"] == "text_delta":
        got.pieces.append((at, delta["text"]))
    elif delta["type"] == "input_json_delta":
        got.arguments += delta["partial_json"]


SCRIPTED = {"tokenstream": {"source": "scripted", "profile": "instant"}}
"""A request answered by the scripted source at once: its first token's arrival is the
request path of any reply (the replay's zero point is the same moment)."""

CLIENTS = {
    "chat": ("/v1/chat/completions", _chat_event),
    "anthropic": ("/v1/messages", _anthropic_event),
}


async def ask(session: aiohttp.ClientSession, base: str, dialect: str, prompt: str,
              extra: dict[str, Any] | None = None) -> tuple[float, Received]:
    """The request's sending time and what came back (stamped as the bytes arrived)."""
    path, on_event = CLIENTS[dialect]
    body = {"model": "fidelity", "max_tokens": 4000, "stream": True,
            "messages": [{"role": "user", "content": prompt}], **(extra or {})}
    got = Received()
    decoder = SSEDecoder()
    sent = time.perf_counter()
    async with session.post(base + path, json=body) as response:
        response.raise_for_status()
        async for data in response.content.iter_any():
            at = time.perf_counter() - sent
            for event in decoder.feed(data):
                if event.data != "[DONE]":
                    on_event(json.loads(event.data), at, got)
    return sent, got


# -- measuring -----------------------------------------------------------------------------


def _due(pieces: list[tuple[float, str]], arrivals: list[tuple[float, str]]) -> list[float]:
    """For each piece, the arrival of the event (of ``arrivals``: time, text) that brought
    its last character."""
    due, position, event, end = [], 0, 0, len(arrivals[0][1])
    for _, text in pieces:
        position += len(text)
        while end < position:
            event += 1
            end += len(arrivals[event][1])
        due.append(arrivals[event][0])
    return due


def _recorded_text(fixture: Fixture) -> list[tuple[float, str]]:
    return [(at, event.text) for at, event in fixture.events if isinstance(event, TextDelta)]


def _aligned(differences: list[float]) -> list[float]:
    """``differences`` less their median: the timing within one reply, whatever the
    constant offset between the two clocks' zero points."""
    middle = statistics.median(differences)
    return [difference - middle for difference in differences]


def _stats(differences: list[float]) -> dict[str, float]:
    absolute = sorted(abs(d) for d in differences)
    return {
        "n": len(absolute),
        "p50_ms": statistics.median(absolute) * 1000,
        "p99_ms": absolute[min(len(absolute) - 1, int(0.99 * len(absolute)))] * 1000,
        "max_ms": absolute[-1] * 1000,
        "signed_median_ms": statistics.median(differences) * 1000,
    }


async def _fixture(directory: Path, count: int) -> Fixture:
    """The newest fixture, once ``count`` are written."""
    for _ in range(400):
        files = _newest_first(directory)
        if len(files) >= count:
            return read_fixture(files[0])
        await asyncio.sleep(0.025)
    raise RuntimeError(f"no fixture number {count} in {directory}")


def _newest_first(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"), key=lambda path: -path.stat().st_mtime)


def _lateness_buckets(metrics: str) -> dict[str, float]:
    """The server's own pacing lateness (event written - its deadline; only replayed events
    are paced here: the live and instant replies are not), as the share of events within
    each bound."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("tokenstream_pacing_lateness_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            counts[bound] = float(line.rsplit(" ", 1)[1])
    total = counts.get("+Inf", 0.0) or 1.0
    return {f"{float(bound) * 1000:g}": round(count / total, 5)
            for bound, count in counts.items() if bound != "+Inf"}


async def _probe(lateness: list[float]) -> None:
    """This process's own timer lateness while it measures: 1 ms sleeps, how much later
    than asked each ends (CPU contention shows here first: a client stalled by the
    machine stamps every arrival late)."""
    while True:
        began = time.perf_counter()
        await asyncio.sleep(0.001)
        lateness.append(time.perf_counter() - began - 0.001)


async def _served_at(process: asyncio.subprocess.Process) -> str:
    """The URL the server's banner names (``--port 0``: the port it was given)."""
    assert process.stdout is not None
    banner = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    if "serving on " not in banner:
        raise RuntimeError(f"tokenstream did not start: {banner!r}")
    return banner.split("serving on ", 1)[1].split(",")[0].split(" ")[0]


def _check(what: str, got: str, expected: str) -> None:
    if got != expected:
        raise AssertionError(f"{what} differs from the upstream's: {got[:80]!r}...")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    replies = {f"Tell me story number {i}.": seeded_reply(rng, args.deltas)
               for i in range(args.replies)}
    upstream = Upstream(replies, args.upstream_ttft_ms / 1000)
    runner = web.AppRunner(upstream.app())
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    differences: dict[str, list[float]] = {
        "replay chat": [], "replay anthropic": [], "live proxied (baseline)": [],
        "replay chat, aligned": [], "replay anthropic, aligned": [],
        "live proxied (baseline), aligned": [], "recording vs upstream writes, aligned": [],
    }
    offsets: dict[str, list[float]] = {"replay chat": [], "replay anthropic": [],
                                       "scripted reply's first token": []}
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        env = {**os.environ, "OPENAI_API_KEY": "sk-fidelity-not-a-real-key"}
        if args.server_root:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.server_root,
                                                               env.get("PYTHONPATH")]))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tokenstream", "serve", "--port", "0",
            "--upstream", f"http://127.0.0.1:{upstream_port}/v1", "--profile", "instant",
            "--record", str(directory), "--replay", str(directory),
            "--replay-on-miss", "upstream", "--replay-speed", str(args.speed),
            "--log-level", "ERROR", "--loop", args.loop, "--clock", args.clock,
            env=env, cwd=args.server_root, stdout=asyncio.subprocess.PIPE,
        )
        base = await _served_at(process)
        tokenizer = Tokenizer(load_encoding())
        lateness: list[float] = []
        probe = asyncio.create_task(_probe(lateness))
        try:
            await wait_ready(base + "/healthz", process, tries=400)
            async with aiohttp.ClientSession() as session:
                for number, (prompt, reply) in enumerate(replies.items(), 1):
                    sent, live = await ask(session, base, "chat", prompt)  # recorded
                    _check("live text", live.text, reply.text)
                    _check("live arguments", live.arguments, reply.arguments)
                    writes = [(at - sent, text) for at, (_, text)
                              in zip(upstream.writes[prompt], reply.deltas, strict=True)]
                    baseline = [
                        at - due for (at, _), due in zip(live.pieces,
                                                         _due(live.pieces, writes), strict=True)
                    ]
                    differences["live proxied (baseline)"] += baseline
                    differences["live proxied (baseline), aligned"] += _aligned(baseline)
                    fixture = await _fixture(directory, number)
                    recorded = _recorded_text(fixture)
                    received = upstream.received[prompt]
                    differences["recording vs upstream writes, aligned"] += _aligned([
                        at - (write - received) for (at, _), write
                        in zip(recorded, upstream.writes[prompt], strict=True)
                    ])
                    for _ in range(args.replays):
                        for dialect in CLIENTS:
                            _, got = await ask(session, base, dialect, prompt)
                            _check(f"replayed text ({dialect})", got.text, reply.text)
                            _check(f"replayed arguments ({dialect})", got.arguments,
                                   reply.arguments)
                            expected = [piece.text for piece in tokenizer.pieces(reply.text)]
                            if [text for _, text in got.pieces] != expected:
                                raise AssertionError(f"{dialect}: not one event per token")
                            replayed = [
                                at - due / args.speed for (at, _), due
                                in zip(got.pieces, _due(got.pieces, recorded), strict=True)
                            ]
                            differences[f"replay {dialect}"] += replayed
                            differences[f"replay {dialect}, aligned"] += _aligned(replayed)
                            offsets[f"replay {dialect}"].append(statistics.median(replayed))
                        _, scripted = await ask(session, base, "chat", prompt, SCRIPTED)
                        offsets["scripted reply's first token"].append(scripted.pieces[0][0])
                async with session.get(base + "/metrics") as response:
                    server_lateness = _lateness_buckets(await response.text())
        finally:
            probe.cancel()
            process.terminate()
            await asyncio.wait_for(process.wait(), 15)
            await runner.cleanup()
    results: dict[str, Any] = {name: _stats(values) for name, values in differences.items()}
    results["this process's 1 ms timer, lateness"] = _stats(lateness)
    results["server: replayed events written within (ms)"] = server_lateness
    results["request path (median offset per reply, ms)"] = {
        name: [round(value * 1000, 3) for value in values] for name, values in offsets.items()
    }
    return results


def _print(results: dict[str, Any], args: argparse.Namespace, seconds: float) -> None:
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"machine: {machine()}; tokenstream --loop {args.loop} --clock {args.clock}")
    print(f"{args.replies} seeded replies of {args.deltas} text deltas (seed {args.seed}, "
          f"upstream TTFT {args.upstream_ttft_ms:g} ms), "
          f"each recorded once and replayed {args.replays} times per dialect at speed "
          f"{args.speed:g}; took {seconds:.0f} s\n")
    print(f"{'|arrival - reference| per token':<38} {'tokens':>7} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'median signed':>14}")
    paths = "request path (median offset per reply, ms)"
    server = "server: replayed events written within (ms)"
    for name, s in results.items():
        if name not in (paths, server):
            print(f"{name:<38} {s['n']:>7} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f} "
                  f"{s['max_ms']:8.3f} {s['signed_median_ms']:14.3f}")
    for name, values in results[paths].items():
        print(f"{paths}, {name}: {values}")
    print(f"{server}: " + ", ".join(
        f"{bound} ms {share:.2%}" for bound, share in results[server].items()
        if float(bound) in (0.5, 1, 2, 5, 10)))
    for suffix in ("", ", aligned"):
        baseline = results["live proxied (baseline)" + suffix]
        for name in ("replay chat", "replay anthropic"):
            replay = results[name + suffix]
            print(f"baseline / {name}{suffix}: p50 {baseline['p50_ms'] / replay['p50_ms']:.1f}x,"
                  f" p99 {baseline['p99_ms'] / replay['p99_ms']:.1f}x")
    print("text and tool-call arguments: byte-exact in every reply (checked)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=3)
    parser.add_argument("--deltas", type=int, default=300, help="text deltas per reply")
    parser.add_argument("--replays", type=int, default=3, help="replays per reply and dialect")
    parser.add_argument("--speed", type=float, default=1.0, help="tokenstream --replay-speed")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--upstream-ttft-ms", type=float, default=150.0,
                        help="the upstream's pause before its first chunk")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                        help="tokenstream's event loop (serve --loop)")
    parser.add_argument("--clock", choices=["bucket", "loop"], default="bucket",
                        help="tokenstream's pacing timers (serve --clock)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--server-root", metavar="DIR",
                        help="run tokenstream from this checkout's source (default: the "
                        "installed package)")
    arguments = parser.parse_args()
    began = time.monotonic()
    outcome = asyncio.run(main(arguments))
    _print(outcome, arguments, time.monotonic() - began)
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as out:
            json.dump({"args": vars(arguments), "machine": machine(), "results": outcome}, out,
                      indent=2)
