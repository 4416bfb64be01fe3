"""What the measuring scripts share: a free local port, waiting for a started tokenstream
to answer, and the line that names the machine a run was made on.

The scripts run as ``python scripts/<name>.py``, so this directory is on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, process: asyncio.subprocess.Process, tries: int) -> None:
    """Polls ``url`` every 50 ms until it answers 200, at most ``tries`` times."""
    async with aiohttp.ClientSession() as session:
        for _ in range(tries):
            if process.returncode is not None:
                raise RuntimeError("tokenstream exited at start-up")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("tokenstream did not start")


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
            f"aiohttp {aiohttp.__version__}, {platform.system()} {platform.release()}")
