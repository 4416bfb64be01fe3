"""Stream a reply from ``GET /v1/stream`` (``format=json``: each event says how many tokens
it carries), printing its text as it arrives and measuring its cadence at the client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

import aiohttp

from tokenstream.client.summary import StreamSummary
from tokenstream.sse.parser import ServerSentEvent, SSEDecoder

__all__ = ["stream_prompt"]


async def stream_prompt(
    base_url: str,
    prompt: str,
    params: Mapping[str, str],
    write: Callable[[str], None],
    *,
    raw: Callable[[ServerSentEvent], None] | None = None,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> StreamSummary:
    """Stream ``prompt`` from ``GET /v1/stream`` (JSON format), writing text as it arrives
    (and handing ``raw`` each event as it was parsed)."""
    summary = StreamSummary(started=clock())
    query = {**params, "prompt": prompt, "format": "json"}
    own_session = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    try:
        async with http.get(base_url.rstrip("/") + "/v1/stream", params=query) as response:
            if response.status != 200:
                body = await response.text()
                try:
                    summary.error = json.loads(body)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    summary.error = f"HTTP {response.status}: {body[:200]}"
                return summary
            decoder = SSEDecoder()
            async for chunk in response.content.iter_any():
                for event in decoder.feed(chunk):
                    if raw is not None:
                        raw(event)
                    if event.data == "[DONE]":
                        return summary
                    payload = json.loads(event.data)
                    if "error" in payload:
                        summary.error = payload["error"]["message"]
                        continue
                    summary.record(clock(), payload["tokens"])
                    write(payload["token"])
            decoder.close()
            summary.error = summary.error or "the stream ended without the [DONE] sentinel"
            return summary
    finally:
        if own_session:
            await http.close()
