#!/usr/bin/env python3
"""Soak test: thousands of clients that leave, reset, stall or finish; the server keeps nothing.

Starts tokenstream in a child process (the real app, with a small kernel send buffer so that
a client that stops reading is felt after a few kilobytes), runs mixed client cycles against
it over loopback, and compares the child's asyncio tasks, open sockets, active streams and
RSS before and after. Exits 1 when a check fails.

    python scripts/soak.py                      # 10,000 cycles, 50 clients at a time
    python scripts/soak.py --cycles 600 --json  # the short version the tests run

Cycle kinds, in turn: connect and close; partial headers; partial body; stream and close
after the first event; stream and reset (RST) after the first event; a complete stream; a
complete non-streamed completion; a POST stream closed mid-way; a client that never reads
(the server must end it after ``send_timeout_s``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from typing import Any

KINDS = [
    "connect_close",
    "partial_headers",
    "partial_body",
    "close_after_first_event",
    "reset_after_first_event",
    "complete_stream",
    "complete_json",
    "post_stream_close",
    "never_read",
]
SEND_TIMEOUT_S = 0.5
RSS_LIMIT_BYTES = 5 * 1024 * 1024


# --- the server side (child process) --------------------------------------------------------

def _socket_count() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _listen() -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # clients that come before the app is ready wait in the backlog
    return listener


async def _child(listener: socket.socket) -> None:
    from aiohttp import web

    from tokenstream.config import validate_mapping
    from tokenstream.server.app import STATE, create_app

    config = validate_mapping(
        {
            "server": {
                "send_timeout_s": SEND_TIMEOUT_S,
                "max_buffered_bytes": 4096,
                "heartbeat_s": 15,
                "access_log_level": "OFF",
            },
            "profiles": {"soak": {"tokens_per_second": 4000, "ttft_ms": 0, "jitter": 0}},
            "default_profile": "soak",
            # a client that leaves ends its stream at once; the logs kept are at their bound
            # after the warm-up, so that any growth after it is a leak
            "resume": {"linger_s": 0, "max_streams": 100},
        },
        "<soak>",
    )
    app = create_app(config, environ={})
    state = app[STATE]
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)

    async def stats(request: web.Request) -> web.Response:
        if request.query.get("gc"):
            gc.collect()
        assert runner.server is not None
        return web.json_response({
            "tasks": len(asyncio.all_tasks()),
            "sockets": _socket_count(),
            "connections": len(runner.server.connections),
            "active_streams": state.stats.active,
            "registry": len(state.streams),
            "rss_bytes": _rss_bytes(),
            "streams_started": state.stats.started,
            "stalled": state.stats.stalled,
            "disconnected": state.stats.disconnected,
            "completed": state.stats.completed,
            "failed": state.stats.failed,
        })

    app.router.add_get("/_soak/stats", stats)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def _run_child(port_file: str) -> None:
    listener = _listen()
    with open(port_file + ".tmp", "w") as out:
        out.write(str(listener.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    asyncio.run(_child(listener))


# --- the client side ------------------------------------------------------------------------

async def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _read_until(sock: socket.socket, marker: bytes, limit: int = 4 << 20) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while marker not in data and len(data) < limit:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 30)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n".encode()


def _post(body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nContent-Type: "
            b"application/json\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
            + payload)


def _chat(stream: bool, prompt: str = "hello") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": stream}


async def cycle(kind: str, port: int) -> str:
    """One client; returns how it ended from the client's side (for the summary)."""
    loop = asyncio.get_running_loop()
    sock = await _connect(port, rcvbuf=4096 if kind == "never_read" else None)
    try:
        if kind == "connect_close":
            return "closed"
        if kind == "partial_headers":
            await loop.sock_sendall(sock, b"GET /v1/stream?prompt=hi HTTP/1.1\r\nHost: s")
            return "closed"
        if kind == "partial_body":
            await loop.sock_sendall(sock, _post(_chat(True))[:-20])
            return "closed"
        if kind == "close_after_first_event":
            await loop.sock_sendall(sock, _get("/v1/stream?prompt=long"))
            await _read_until(sock, b"data:")
            return "closed"
        if kind == "reset_after_first_event":
            await loop.sock_sendall(sock, _get("/v1/stream?prompt=long&format=json"))
            await _read_until(sock, b"data:")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return "reset"
        if kind == "complete_stream":
            await loop.sock_sendall(sock, _get("/v1/stream?prompt=hello&format=openai"))
            data = await _read_until(sock, b"[DONE]")
            return "done" if b"[DONE]" in data else "incomplete"
        if kind == "complete_json":
            await loop.sock_sendall(sock, _post(_chat(False)))
            data = await _read_until(sock, b'"usage"')
            return "done" if b'"usage"' in data else "incomplete"
        if kind == "post_stream_close":
            await loop.sock_sendall(sock, _post(_chat(True, "long")))
            await _read_until(sock, b"chat.completion.chunk")
            return "closed"
        if kind == "never_read":
            # an echoed prompt of 1500 tokens: ~250 kB of events, far more than the buffers
            await loop.sock_sendall(sock, _get("/v1/stream?format=openai&source=echo&prompt="
                                               + "x%20" * 1500))
            # hold the socket without reading, past the server's send timeout
            await asyncio.sleep(SEND_TIMEOUT_S * 3)
            data = await _read_until(sock, b"[DONE]")
            return "cut_off" if b"[DONE]" not in data else "done"
        raise ValueError(kind)
    finally:
        sock.close()


async def _stats(port: int, collect: bool = False) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    sock = await _connect(port)
    try:
        await loop.sock_sendall(sock, _get("/_soak/stats" + ("?gc=1" if collect else "")))
        data = await _read_until(sock, b"}")
    finally:
        sock.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


async def _settled(port: int) -> dict[str, Any]:
    """Stats once every stream and connection but the one asking is gone (bounded wait)."""
    for _ in range(600):
        stats = await _stats(port, collect=True)
        if stats["active_streams"] == 0 and stats["registry"] == 0 and stats["connections"] <= 1:
            return stats
        await asyncio.sleep(0.05)
    return stats


async def _run_cycles(port: int, count: int, concurrency: int, outcomes: Counter[str]) -> None:
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            kind = KINDS[index % len(KINDS)]
            try:
                outcomes[f"{kind}:{await cycle(kind, port)}"] += 1
            except OSError as exc:
                outcomes[f"{kind}:error:{type(exc).__name__}"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _measure(port: int, cycles: int, concurrency: int, warmup: int) -> dict[str, Any]:
    warm: Counter[str] = Counter()
    await _run_cycles(port, warmup, concurrency, warm)
    before = await _settled(port)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    await _run_cycles(port, cycles, concurrency, outcomes)
    elapsed = time.monotonic() - started
    after = await _settled(port)
    return {"before": before, "after": after, "outcomes": outcomes, "seconds": elapsed}


def soak(cycles: int, concurrency: int, warmup: int) -> dict[str, Any]:
    port_file = f"/tmp/tokenstream-soak-{os.getpid()}.port"
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", port_file],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(1200):
            if os.path.exists(port_file) or child.poll() is not None:
                break
            time.sleep(0.05)
        with open(port_file) as port_text:
            port = int(port_text.read())
        run = asyncio.run(_measure(port, cycles, concurrency, warmup))
    finally:
        child.send_signal(signal.SIGTERM)
        exit_code = child.wait(30)
        if os.path.exists(port_file):
            os.unlink(port_file)
    before, after, outcomes = run["before"], run["after"], run["outcomes"]
    rss_growth = after["rss_bytes"] - before["rss_bytes"]
    checks = {
        "tasks back to baseline": after["tasks"] <= before["tasks"],
        "sockets back to baseline": after["sockets"] <= before["sockets"],
        "no active stream": after["active_streams"] == 0 and after["registry"] == 0,
        "RSS grew < 5 MB": rss_growth < RSS_LIMIT_BYTES,
        "no stream failed": after["failed"] == 0,
        "every never-reading client was cut off": outcomes.get("never_read:done", 0) == 0,
        "every complete cycle completed": not any(k.endswith(":incomplete") for k in outcomes),
        "no client saw a connection error": not any(":error:" in k for k in outcomes),
        "child exited 0": exit_code == 0,
    }
    return {
        "cycles": cycles,
        "warmup_cycles": warmup,
        "concurrency": concurrency,
        "seconds": round(run["seconds"], 1),
        "before": before,
        "after": after,
        "rss_growth_bytes": rss_growth,
        "streams_in_run": after["streams_started"] - before["streams_started"],
        "stalled_in_run": after["stalled"] - before["stalled"],
        "outcomes": dict(sorted(outcomes.items())),
        "checks": checks,
        "ok": all(checks.values()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, {platform.system()} {platform.release()}",
    }


def _report(result: dict[str, Any]) -> str:
    before, after = result["before"], result["after"]
    mib = 1024 * 1024
    lines = [
        f"soak: {result['cycles']} cycles ({result['warmup_cycles']} warm-up), "
        f"{result['concurrency']} clients at a time, {result['seconds']} s; {result['machine']}",
        f"  streams started in the run: {result['streams_in_run']}, "
        f"cut off for not reading: {result['stalled_in_run']}",
        "                 before      after",
        f"  tasks        {before['tasks']:>8} {after['tasks']:>10}",
        f"  sockets      {before['sockets']:>8} {after['sockets']:>10}",
        f"  connections  {before['connections']:>8} {after['connections']:>10}",
        f"  streams      {before['active_streams']:>8} {after['active_streams']:>10}",
        f"  RSS (MiB)    {before['rss_bytes'] / mib:>8.1f} {after['rss_bytes'] / mib:>10.1f}"
        f"   (growth {result['rss_growth_bytes'] / mib:+.2f} MiB)",
        "  outcomes: " + ", ".join(f"{k}={v}" for k, v in result["outcomes"].items()),
    ]
    lines += [f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in result["checks"].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=900)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--child", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_child(args.child)
        return 0
    result = soak(args.cycles, args.concurrency, args.warmup)
    print(json.dumps(result, indent=2) if args.json else _report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
