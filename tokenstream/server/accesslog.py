"""The access log: one structured line per request, written when the request ends.

    access method=POST path=/v1/chat/completions status=200 duration_ms=2350.0 stream=true
           tokens=117 outcome=completed disconnected=false remote=127.0.0.1

Fields are ``key=value`` (logfmt); a value with spaces, quotes or control characters is
JSON-quoted, so a crafted path cannot forge a second line. The same fields ride on the log
record as ``record.access`` (a dict) for JSON log handlers.

What it never contains: headers (so no ``Authorization``), query strings (prompts, and
whatever a client put there), bodies. The duration is measured on the app's clock, so a test
with a ``FakeClock`` sees the paced duration exactly.

A handler reports what only it knows (tokens sent, how the stream ended) through
``current_record()``, a context variable set for the request's task. The same ending, as a
``RequestEnd``, is handed to ``on_end`` (the request journal) when one is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from tokenstream.engine.accounting import AccessRecord, bind_record, unbind_record

__all__ = [
    "ACCESS_LOGGER",
    "RequestEnd",
    "RequestObserver",
    "access_log_middleware",
    "format_line",
    "log_client_errors_at_info",
]

ACCESS_LOGGER = "tokenstream.access"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestEnd:
    """How a request ended, as the access log writes it."""

    received_at: float
    """Wall-clock time (``time.time()``) the request came in."""
    duration: float
    """Seconds on the app's clock."""
    status: int
    """499 for a client that left before any response."""
    stream: bool
    tokens: int
    outcome: str
    """A stream's (``completed``, ``disconnected``, ``stalled``, ...), else ``ok``, ``error``
    or ``disconnected``."""
    disconnected: bool
    fault: str = ""
    """The faults injected into the reply (their spec), if any."""


RequestObserver = Callable[[web.Request, RequestEnd], None]


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and all(33 <= ord(char) < 127 and char not in '"=\\' for char in text):
        return text
    return json.dumps(text)


def _plain_outcome(status: int | None) -> str:
    """How a request that streamed nothing ended."""
    if status is None:
        return "disconnected"
    return "ok" if status < 400 else "error"


def format_line(fields: dict[str, object]) -> str:
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def access_log_middleware(
    logger: logging.Logger,
    level: int | None,
    now: Callable[[], float],
    on_end: RequestObserver | None = None,
) -> Middleware:
    """Log each request at ``level`` (None: not at all) when it ends, however it ends, and
    hand its ending to ``on_end``."""

    @web.middleware
    async def access_log(request: web.Request, handler: _Handler) -> web.StreamResponse:
        start = now()
        received_at = time.time()
        status: int | None = None
        record, token = bind_record()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            record.outcome = record.outcome or "disconnected"
            raise
        finally:
            unbind_record(token)
            log_at = level if level is not None and logger.isEnabledFor(level) else None
            if log_at is not None or on_end is not None:
                end = _ended(record, status, received_at, now() - start)
                if log_at is not None:
                    _log(logger, log_at, request, record, end)
                if on_end is not None:
                    _observe(on_end, request, end)

    return access_log


def _ended(
    record: AccessRecord, status: int | None, received_at: float, duration: float
) -> RequestEnd:
    return RequestEnd(
        received_at=received_at,
        duration=duration,
        status=record.status or status or 499,  # 499: client closed request
        stream=record.stream,
        tokens=record.tokens,
        outcome=record.outcome or _plain_outcome(status),
        disconnected=record.disconnected or status is None,
        fault=record.fault,
    )


def _observe(on_end: RequestObserver, request: web.Request, end: RequestEnd) -> None:
    try:
        on_end(request, end)
    except Exception:  # the request has been answered: its observer cannot fail it
        log.exception("recording %s %s failed", request.method, request.path)


def _log(
    logger: logging.Logger,
    level: int,
    request: web.Request,
    record: AccessRecord,
    end: RequestEnd,
) -> None:
    fields: dict[str, object] = {
        "method": request.method,
        "path": request.path,
        "status": end.status,
        "duration_ms": round(end.duration * 1000, 1),
        "stream": end.stream,
        "tokens": end.tokens,
        "outcome": end.outcome,
        "disconnected": end.disconnected,
        "remote": request.remote or "-",
    }
    if record.outcome == "stalled":
        fields["buffered_bytes"] = record.peak_buffered
    if end.fault:
        fields["fault"] = end.fault
    logger.log(level, "access %s", format_line(fields), extra={"access": fields})


class _ClientErrorsAtInfo(logging.Filter):
    """aiohttp logs a request it cannot parse (oversized headers, a malformed request line)
    at ERROR with a traceback. That is the client's mistake, answered 400: log it at INFO,
    in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "bad request: %s", (error.message,)
            record.exc_info = record.exc_text = None
        return True


_CLIENT_ERRORS_AT_INFO = _ClientErrorsAtInfo()


def log_client_errors_at_info() -> None:
    """Install the filter on aiohttp's server logger (once, however often it is called)."""
    logging.getLogger("aiohttp.server").addFilter(_CLIENT_ERRORS_AT_INFO)
