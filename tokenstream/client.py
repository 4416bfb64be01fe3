"""A terminal client: prints a reply as it streams and measures its cadence at the client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from tokenstream.sse.parser import SSEDecoder

__all__ = ["StreamSummary", "stream_prompt"]


@dataclass(slots=True)
class StreamSummary:
    tokens: int = 0
    events: int = 0
    started: float = 0.0
    first_event: float | None = None
    last_event: float | None = None
    arrivals: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_event is None else self.first_event - self.started

    @property
    def tokens_per_second(self) -> float | None:
        """Rate after the first event: (tokens after it) / (time from it to the last)."""
        if self.first_event is None or self.last_event is None or self.events < 2:
            return None
        span = self.last_event - self.first_event
        first_tokens = self._first_tokens
        return (self.tokens - first_tokens) / span if span > 0 else None

    _first_tokens: int = 0

    def describe(self) -> str:
        parts = [f"{self.tokens} tokens in {self.events} events"]
        if self.ttft is not None:
            parts.append(f"time to first token {self.ttft * 1000:.0f} ms")
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:.1f} tokens/s")
        if self.last_event is not None:
            parts.append(f"total {self.last_event - self.started:.2f} s")
        if self.error:
            parts.append(f"error: {self.error}")
        return " · ".join(parts)


async def stream_prompt(
    base_url: str,
    prompt: str,
    params: Mapping[str, str],
    write: Callable[[str], None],
    *,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> StreamSummary:
    """Stream ``prompt`` from ``GET /v1/stream`` (JSON format), writing text as it arrives."""
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
                    if event.data == "[DONE]":
                        return summary
                    payload = json.loads(event.data)
                    if "error" in payload:
                        summary.error = payload["error"]["message"]
                        continue
                    now = clock()
                    if summary.first_event is None:
                        summary.first_event = now
                        summary._first_tokens = payload["tokens"]
                    summary.last_event = now
                    summary.arrivals.append(now)
                    summary.events += 1
                    summary.tokens += payload["tokens"]
                    write(payload["token"])
            decoder.close()
            summary.error = summary.error or "the stream ended without the [DONE] sentinel"
            return summary
    finally:
        if own_session:
            await http.close()
