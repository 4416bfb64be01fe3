#!/usr/bin/env python3
"""Time to first token through the tokenstream proxy versus straight to the upstream.

One run, one machine: a fake OpenAI-compatible upstream (an aiohttp app in this process),
tokenstream started as `tokenstream serve --upstream ...` in its own process, and a client
in this process that sends the same streaming chat completion in turn to the upstream
(direct), to a bare relay (a minimal aiohttp proxy that copies the upstream's bytes, in its
own process: what any Python proxy hop costs) and to tokenstream (proxy), one request at a
time, reading every reply to its end so every path reuses its keep-alive connections. The
order of the three is shuffled each round (with a fixed seed).

Time to first token (TTFT) is measured at the client, from sending the request to the
first event that carries `delta.content`. Two upstream rhythms:

- burst:     the whole reply in one write (many tokens per chunk): the proxy's own cost.
- per-token: one token per chunk every --token-interval-ms, as hosted models stream. The
             proxy re-tokenizes and holds back the last pre-tokenizer match until more
             text arrives (so token boundaries match whole-text tokenization), so its first
             token waits for the upstream's second chunk: about one interval more.

It also measures how long after a client disconnects the upstream sees its request close.

    python scripts/proxy_overhead.py [--requests 100] [--profile smooth] [--loop uvloop]

Times are taken with ``time.perf_counter`` (uvloop's ``loop.time()`` counts whole
milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tokenstream.sse.parser import SSEDecoder

from script_support import free_port, machine, wait_ready

REPLY_WORDS = [
    "Streaming", "changes", "how", "an", "answer", "feels:", "the", "first", "words", "arrive",
    "at", "once", "and", "the", "rest", "flows", "at", "reading", "speed.",
]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "fake-upstream",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@dataclass
class FakeUpstream:
    ttft: float
    interval: float
    repeat: int = 1
    closed_at: list[float] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        mode = body.get("metadata", {}).get("mode", "burst")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(_chunk({"role": "assistant", "content": ""}))
            if self.ttft:
                await asyncio.sleep(self.ttft)
            words = [w if i == 0 else " " + w for i, w in enumerate(REPLY_WORDS * self.repeat)]
            if mode == "burst":
                await response.write(_chunk({"content": "".join(words)}))
            elif mode == "per-token":
                for word in words:
                    await response.write(_chunk({"content": word}))
                    await asyncio.sleep(self.interval)
            else:  # hang: for the disconnect measurement
                await response.write(_chunk({"content": "".join(words[:6])}))
                await asyncio.Event().wait()
            await response.write(_chunk({}, "stop") + b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        finally:
            if mode == "hang":
                self.closed_at.append(time.perf_counter())


def relay_app(upstream_url: str) -> web.Application:
    """The baseline: forward the body, copy the answer's bytes back as they come."""
    sessions: list[aiohttp.ClientSession] = []

    async def session_ctx(app: web.Application) -> Any:
        sessions.append(aiohttp.ClientSession())
        yield
        await sessions[0].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": "application/json"}
        async with sessions[0].post(upstream_url + "/chat/completions", data=body,
                                    headers=headers) as upstream:
            response = web.StreamResponse(
                status=upstream.status, headers={"Content-Type": upstream.content_type}
            )
            await response.prepare(request)
            async for data in upstream.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_get("/healthz", healthz)
    return app


async def _ttft(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    first: float | None = None
    decoder = SSEDecoder()
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for data in response.content.iter_any():
            for event in decoder.feed(data):
                if first is None and event.data != "[DONE]":
                    choices = json.loads(event.data).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"no content from {url}")
    return first - started


async def _disconnect_latency(session: aiohttp.ClientSession, url: str,
                              upstream: FakeUpstream, body: dict[str, Any]) -> float:
    before = len(upstream.closed_at)
    decoder = SSEDecoder()
    response = await session.post(url, json={**body, "metadata": {"mode": "hang"}})
    got = False
    while not got:
        for event in decoder.feed(await response.content.readany()):
            choices = json.loads(event.data).get("choices") or [{}]
            got = got or bool(choices[0].get("delta", {}).get("content"))
    left = time.perf_counter()
    response.close()
    while len(upstream.closed_at) == before:
        await asyncio.sleep(0.0005)
        if time.perf_counter() - left > 5:
            raise RuntimeError("the upstream request stayed open 5 s after the client left")
    return upstream.closed_at[-1] - left


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "min_ms": ordered[0] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    upstream = FakeUpstream(
        ttft=args.upstream_ttft_ms / 1000, interval=args.token_interval_ms / 1000,
        repeat=args.reply_repeat,
    )
    runner = web.AppRunner(upstream.app(), handler_cancellation=True)
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    proxy_port = free_port()
    relay_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    if args.server_root:  # that checkout's tokenstream package, ahead of the installed one
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.server_root,
                                                           env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "tokenstream", "serve", "--port", str(proxy_port),
               "--upstream", upstream_url, "--profile", args.profile, "--log-level", "ERROR",
               "--loop", args.loop]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=args.server_root, stdout=asyncio.subprocess.DEVNULL
    )
    relay = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--relay-serve", str(relay_port), upstream_url, args.loop,
        stdout=asyncio.subprocess.DEVNULL,
    )
    results: dict[str, Any] = {}
    try:
        proxy_url = f"http://127.0.0.1:{proxy_port}/v1"
        relay_url = f"http://127.0.0.1:{relay_port}/v1"
        await wait_ready(f"http://127.0.0.1:{proxy_port}/healthz", process, tries=200)
        await wait_ready(f"http://127.0.0.1:{relay_port}/healthz", relay, tries=200)
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        paths = {"direct": upstream_url, "relay": relay_url, "proxy": proxy_url}
        async with aiohttp.ClientSession() as session:
            for mode in args.modes:
                request = {**body, "metadata": {"mode": mode}}
                times: dict[str, list[float]] = {path: [] for path in paths}
                order = list(paths.items())
                shuffle = random.Random(0).shuffle
                for i in range(args.warmup + args.requests):
                    # Interleaved, so that drift hits all alike, in a new order each round:
                    # a request sent right after tokenstream's paced reply (half a second
                    # of 25 ms gaps) finds the machine colder than one sent right after a
                    # reply that came in a millisecond, so no path may always follow the
                    # same one (in a fixed order, direct always came after tokenstream).
                    shuffle(order)
                    for path, url in order:
                        ttft = await _ttft(session, url + "/chat/completions", request)
                        if i >= args.warmup:
                            times[path].append(ttft)
                added = [p - d for p, d in zip(times["proxy"], times["direct"], strict=True)]
                relay_added = [
                    r - d for r, d in zip(times["relay"], times["direct"], strict=True)
                ]
                results[mode] = {
                    **{path: _stats(values) for path, values in times.items()},
                    "added_p50_ms": statistics.median(added) * 1000,
                    "relay_added_p50_ms": statistics.median(relay_added) * 1000,
                    "ratio_p50": statistics.median(times["proxy"])
                    / statistics.median(times["direct"]),
                }
            latencies = [
                await _disconnect_latency(session, proxy_url + "/chat/completions", upstream, body)
                for _ in range(args.disconnects)
            ]
            if latencies:
                results["disconnect_to_upstream_close"] = _stats(latencies)
    finally:
        for child in (process, relay):
            child.terminate()
            await asyncio.wait_for(child.wait(), 10)
        await runner.cleanup()
    return results


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _print(results: dict[str, Any], args: argparse.Namespace, seconds: float) -> None:
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"machine: {machine()}, loop {args.loop}")
    print(f"upstream TTFT {args.upstream_ttft_ms:g} ms, per-token interval "
          f"{args.token_interval_ms:g} ms, reply {len(REPLY_WORDS) * args.reply_repeat} words, "
          f"{args.requests} requests per path after "
          f"{args.warmup} warm-up, profile {args.profile}, took {seconds:.1f} s\n")
    print(f"{'upstream rhythm':<12} {'path':<7} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}"
          f" {'min ms':>8} {'max ms':>8}")
    for mode in args.modes:
        for path in ("direct", "relay", "proxy"):
            s = results[mode][path]
            print(f"{mode:<12} {path:<7} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} "
                  f"{s['mean_ms']:8.2f} {s['min_ms']:8.2f} {s['max_ms']:8.2f}")
        print(f"{'':<12} added TTFT p50: tokenstream {results[mode]['added_p50_ms']:.2f} ms "
              f"(ratio proxy/direct {results[mode]['ratio_p50']:.2f}x), bare relay "
              f"{results[mode]['relay_added_p50_ms']:.2f} ms")
    if "disconnect_to_upstream_close" not in results:
        return
    s = results["disconnect_to_upstream_close"]
    print(f"\nclient disconnect -> upstream request closed: p50 {s['p50_ms']:.2f} ms, "
          f"max {s['max_ms']:.2f} ms ({args.disconnects} trials)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--relay-serve"]:
        web.run_app(relay_app(sys.argv[3]), host="127.0.0.1", port=int(sys.argv[2]),
                    handler_cancellation=True, print=None, loop=_new_loop(sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--disconnects", type=int, default=20)
    parser.add_argument("--profile", default="smooth")
    parser.add_argument("--upstream-ttft-ms", type=float, default=0.0)
    parser.add_argument("--token-interval-ms", type=float, default=20.0)
    parser.add_argument("--reply-repeat", type=int, default=1, metavar="K",
                        help="the reply is its words K times over (a larger burst)")
    parser.add_argument("--modes", nargs="+", choices=["burst", "per-token"],
                        default=["burst", "per-token"], help="upstream rhythms to measure")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="event loop of every process: tokenstream, the relay, and this one "
                        "(the fake upstream and the client)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--server-root", metavar="DIR",
                        help="run tokenstream from this checkout's source (default: the "
                        "installed package)")
    arguments = parser.parse_args()
    began = time.monotonic()
    with asyncio.Runner(loop_factory=lambda: _new_loop(arguments.loop)) as runner:
        outcome = runner.run(main(arguments))
    _print(outcome, arguments, time.monotonic() - began)
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as out:
            json.dump({"args": vars(arguments), "machine": machine(), "results": outcome}, out,
                      indent=2)
