#!/usr/bin/env python3
"""CPU per request of the upstream's HTTP client, against aiohttp's and a bare protocol.

One process, one event loop: a raw asyncio server answers every request at once with a
small chunked event stream, and three clients send the same POST to it one request at a
time, in turn, each reading the answer to its end over one keep-alive connection:

- aiohttp:     ``aiohttp.ClientSession.post`` (what tokenstream used until November 2026);
- http_client: ``tokenstream.sources.http_client.ConnectionPool.request`` (what it uses now);
- raw:         a bare ``asyncio.Protocol`` that writes ready-made bytes and waits for the
               body's last chunk: the floor (the server's share and the system calls).

The figure is process CPU time per request, so it includes the server's work, the same for
all three; compare the differences to ``raw``.

    python scripts/bench_http_client.py [--requests 3000] [--rounds 2] [--loop uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp

from tokenstream.sources.http_client import ConnectionPool

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
EVENT = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%b\r\n0\r\n\r\n" % (len(EVENT), EVENT)
)
HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


class Server(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.buffer.endswith(BODY):  # one whole request (the clients send nothing else)
            self.buffer = b""
            self.transport.write(ANSWER)  # type: ignore[attr-defined]


class RawClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.done: asyncio.Future[None] | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.buffer.endswith(b"0\r\n\r\n") and self.done is not None:
            self.buffer = b""
            self.done.set_result(None)


async def main(requests: int, rounds: int) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    pool = ConnectionPool(url, limit=10, connect_timeout=5)
    _, raw = await loop.create_connection(RawClient, "127.0.0.1", port)
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(BODY), BODY)
    )

    async def with_aiohttp(session: aiohttp.ClientSession) -> None:
        async with session.post(url + "/chat/completions", data=BODY, headers=HEADERS) as r:
            await r.read()

    async def with_http_client() -> None:
        response = await pool.request("POST", "/chat/completions", HEADERS, BODY)
        await response.read()
        response.release()

    async def with_raw() -> None:
        raw.done = loop.create_future()
        raw.transport.write(request)  # type: ignore[attr-defined]
        await raw.done

    results: dict[str, list[float]] = {"aiohttp": [], "http_client": [], "raw": []}
    async with aiohttp.ClientSession() as session:
        clients = {
            "aiohttp": lambda: with_aiohttp(session),
            "http_client": with_http_client,
            "raw": with_raw,
        }
        for send in clients.values():  # warm-up
            for _ in range(min(100, requests)):
                await send()
        for _ in range(rounds):
            for name, send in clients.items():
                began = time.process_time()
                for _ in range(requests):
                    await send()
                results[name].append((time.process_time() - began) / requests * 1e6)
    await pool.close()
    raw.transport.close()
    server.close()
    return results


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=lambda: _new_loop(args.loop)) as runner:
        measured = runner.run(main(args.requests, args.rounds))
    print(f"CPU per request, µs ({args.requests} requests a round, {args.loop}):")
    floor = min(measured["raw"])
    for name, values in measured.items():
        rounds = ", ".join(f"{value:.1f}" for value in values)
        print(f"  {name:<12} {rounds}   (best minus raw's best: {min(values) - floor:.1f})")
