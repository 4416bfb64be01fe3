"""Stream a reply from a dialect's own endpoint (``POST /v1/messages`` and the like), as that
API's clients do, and measure its cadence at the client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import aiohttp

from tokenstream.client.dialects import CLIENTS, ReplyRequest
from tokenstream.client.summary import StreamSummary
from tokenstream.dialects.catalog import DIALECTS
from tokenstream.engine.events import (
    Finish,
    ReasoningDelta,
    ReplyError,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tokenstream.sse.parser import ServerSentEvent, SSEDecoder

__all__ = ["client_dialects", "first_model", "stream_dialect"]

_PACED = (TextDelta, ReasoningDelta, ToolCallDelta)
"""The events the server paces token by token: their arrivals are measured."""


def client_dialects() -> list[str]:
    """The dialects this client can speak, in the catalog's order."""
    return [name for name in DIALECTS if name in CLIENTS]


async def http_error(response: aiohttp.ClientResponse) -> str:
    """A refusal, from the error body of any dialect (OpenAI's and Anthropic's both have
    ``error.message``, and ``error.type``)."""
    body = await response.text()
    try:
        error = json.loads(body)["error"]
        return f"HTTP {response.status} {error.get('type') or 'error'}: {error['message']}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {response.status}: {body[:200]}"


async def first_model(http: aiohttp.ClientSession, base_url: str) -> str:
    """The server's first model (``GET /v1/models``): the request needs a model name."""
    async with http.get(base_url + "/v1/models") as response:
        if response.status != 200:
            raise LookupError(await http_error(response))
        models = await response.json()
    try:
        name: str = models["data"][0]["id"]
    except (KeyError, IndexError, TypeError):
        raise LookupError("GET /v1/models lists no model: name one with --model") from None
    return name


async def stream_dialect(
    base_url: str,
    dialect: str,
    request: ReplyRequest,
    show: Callable[[ReplyEvent], None],
    *,
    raw: Callable[[ServerSentEvent], None] | None = None,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> StreamSummary:
    """POST ``request`` to ``dialect``'s endpoint; ``show`` gets each reply event as it
    arrives, and ``raw`` each server-sent event as it was parsed."""
    client = CLIENTS[dialect]
    summary = StreamSummary(started=clock())
    base_url = base_url.rstrip("/")
    own_session = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    try:
        async with http.post(
            base_url + DIALECTS[dialect].path,
            json=client.body(request),
            headers={"Accept": "text/event-stream", **client.headers},
        ) as response:
            if response.status != 200:
                summary.error = await http_error(response)
                return summary
            reader = client.reader()
            sse = SSEDecoder()

            def take(items: list[ReplyEvent]) -> None:
                for item in items:
                    _account(summary, item, clock())
                    show(item)

            def read(events: list[ServerSentEvent]) -> bool:
                """Whether the reader is done."""
                for event in events:
                    if raw is not None:
                        raw(event)
                    take(reader.read(event))
                    if reader.done:
                        return True
                return False

            async for chunk in response.content.iter_any():
                if read(sse.feed(chunk)):
                    return summary
            if not read(sse.close()):
                take(reader.close())  # an error if the reply was not complete
            return summary
    finally:
        if own_session:
            await http.close()


def _account(summary: StreamSummary, item: ReplyEvent, now: float) -> None:
    if isinstance(item, _PACED):
        summary.record(now, None)
    elif isinstance(item, Usage):
        summary.report_tokens(item.completion_tokens)
    elif isinstance(item, Finish):
        summary.finish_reason = item.reason
    elif isinstance(item, ReplyError):
        summary.error = summary.error or f"{item.error_type}: {item.message}"
