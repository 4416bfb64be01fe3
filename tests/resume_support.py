"""What the resume tests share: requests in every dialect, a stream cut by the server, and
checks of the numbered events."""

from __future__ import annotations

from typing import Any

import aiohttp

from support import parse_sse

__all__ = [
    "FAST", "PROMPT", "REQUESTS", "complete_events", "cut", "last_id", "numbered", "reconnect",
    "ui_chat",
]

FAST = {"X-Tokenstream-Profile": "fast"}  # 150 tokens/s, 120 ms to the first
PROMPT = "tell me a story"


def complete_events(body: bytes) -> bytes:
    return body[: body.rfind(b"\n\n") + 2] if b"\n\n" in body else b""


def last_id(body: bytes) -> str:
    return parse_sse(body)[-1].id or ""


async def cut(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
               ) -> tuple[str, bytes]:
    """The stream id and the whole events received before the server reset the connection."""
    got = b""
    stream_id = ""
    try:
        async with session.request(method, url, **kwargs) as response:
            assert response.status == 200, await response.text()
            stream_id = response.headers["X-Tokenstream-Stream-Id"]
            async for chunk in response.content.iter_any():
                got += chunk
    except aiohttp.ClientError:
        pass
    else:
        raise AssertionError("the connection was not cut")
    return stream_id, complete_events(got)


REQUESTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "stream": ("GET", "/v1/stream", {"params": {"prompt": PROMPT}}),
    "openai-chat": ("POST", "/v1/chat/completions", {"json": {
        "model": "m", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": PROMPT}]}}),
    "openai-responses": ("POST", "/v1/responses", {"json": {
        "model": "m", "stream": True, "input": PROMPT}}),
    "anthropic": ("POST", "/v1/messages", {"json": {
        "model": "m", "stream": True, "max_tokens": 500,
        "messages": [{"role": "user", "content": PROMPT}]}}),
    "ai-sdk-ui": ("POST", "/api/chat", {"json": {
        "id": "chat-1", "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": PROMPT}]}]}}),
}


def reconnect(
    session: aiohttp.ClientSession, base: str, dialect: str, stream_id: str, before: bytes
) -> Any:
    """The request (to enter with ``async with``) of a client of ``dialect`` that saw
    ``before`` and reconnects to ``base``: an ``EventSource``'s for ``GET /v1/stream`` (the
    same URL, with ``Last-Event-ID``), else the resume URL ``GET /v1/streams/{id}``."""
    _, path, kwargs = REQUESTS[dialect]
    headers = {"Last-Event-ID": last_id(before)}
    if dialect == "stream":
        return session.get(base + path, headers=headers, **kwargs)
    return session.get(f"{base}/v1/streams/{stream_id}", headers=headers)


def numbered(body: bytes, stream_id: str) -> None:
    events = parse_sse(body)
    assert [e.id for e in events] == [f"{stream_id}:{n}" for n in range(1, len(events) + 1)]


def ui_chat(chat_id: str) -> dict[str, Any]:
    """The AI SDK's ``POST /api/chat`` body of the chat ``chat_id``, at 40 tokens/s."""
    return {"id": chat_id, "messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": PROMPT}]}],
        "tokenstream": {"tokens_per_second": 40, "ttft_ms": 0}}
