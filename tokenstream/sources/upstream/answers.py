"""What an upstream's answer becomes for the client: its error in the OpenAI shape with the
status it came with, and the headers worth passing on (``Retry-After``, ``x-ratelimit-*``...).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping

import aiohttp

from tokenstream.errors import UpstreamError
from tokenstream.sources.secrets import redact

__all__ = ["ERROR_BODY_LIMIT", "error_from_response", "forwarded_headers", "read_at_most"]

log = logging.getLogger(__name__)

ERROR_BODY_LIMIT = 64 * 1024
"""How much of an error answer is read (for its message)."""
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_FORWARDED = frozenset({"retry-after", "retry-after-ms", "x-request-id"})
_FORWARDED_PREFIX = "x-ratelimit-"
_MAX_FORWARDED_VALUE = 1024



def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream's headers a client acts on (when to retry, its rate limits, the request
    id for the upstream's support), those whose value can be passed on unchanged."""
    kept: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if lower in seen or (lower not in _FORWARDED and not lower.startswith(_FORWARDED_PREFIX)):
            continue
        # visible ASCII and spaces only: a control character (CR, LF, ...) would make the
        # response to the client fail to be written, or split it
        if len(value) <= _MAX_FORWARDED_VALUE and value.isascii() and value.isprintable():
            kept[name] = value
            seen.add(lower)
        else:
            log.debug("upstream header %s dropped: its value cannot be passed on", name)
    return kept


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: tuple[str, ...],
    server_credentials: bool,
    api_key_env: str,
) -> UpstreamError:
    """The client's answer to an upstream's error status: the same status, OpenAI's shape."""
    message: str | None = None
    error_type: str | None = None
    param: str | None = None
    code: str | None = None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            error_type, param, code = error.get("type"), error.get("param"), error.get("code")
        elif isinstance(error, str):
            message = error
        else:
            message = payload.get("message") or payload.get("detail")
    if not message:
        text = body[:200].decode("utf-8", "replace").strip()
        message = f"The upstream answered HTTP {status}" + (f": {text}" if text else ".")
    if status in (401, 403) and server_credentials:
        # The key is the server's, not the client's: say so, and echo nothing of it.
        message = (
            f"The upstream refused tokenstream's credentials (HTTP {status}). The operator "
            f"must set a valid key in the environment variable {api_key_env} "
            "(upstream.api_key_env) and restart tokenstream."
        )
    return UpstreamError(
        redact(str(message), secrets),
        status=status,
        error_type=str(error_type) if error_type else _ERROR_TYPES.get(status, "upstream_error"),
        param=None if param is None else str(param),
        code=None if code is None else str(code),
        headers=forwarded_headers(headers),
    )


async def read_at_most(
    content: aiohttp.StreamReader, limit: int, idle_s: float
) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a body, each read within ``idle_s``; True if there was more."""
    parts: list[bytes] = []
    size = 0
    while True:
        async with asyncio.timeout(idle_s):
            chunk = await content.readany()
        if not chunk:
            return b"".join(parts), False
        if size + len(chunk) > limit:
            parts.append(chunk[: limit - size])
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
