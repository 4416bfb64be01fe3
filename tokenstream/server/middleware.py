"""The middleware every request passes: errors rendered in the shape of the API asked (the
OpenAI error shape unless the path is another API's), and the query string and body
encoding checked before any handler reads them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from tokenstream.dialects.anthropic_messages import error_body as anthropic_error_body
from tokenstream.errors import RequestError, error_body
from tokenstream.server.limits import check_body_encoding, check_query_encoding
from tokenstream.server.state import CONFIG

__all__ = ["json_error", "openai_errors", "valid_query"]

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


ANTHROPIC_PATHS = frozenset({"/v1/messages"})
"""Paths whose errors take Anthropic's shape instead of OpenAI's."""


def json_error(error: RequestError, path: str = "") -> web.Response:
    """``error`` in the error shape of the API ``path`` belongs to, with its status."""
    body = anthropic_error_body(error) if path in ANTHROPIC_PATHS else error.to_dict()
    response = web.json_response(body, status=error.status)
    response.headers.update(error.headers)
    return response


def _error_response(error: RequestError, request: web.Request) -> web.Response:
    """``json_error``, except on the AI SDK's chat path: plain text, because the SDK's chat
    transport makes a failed response's whole body the error's message, shown as it is."""
    if request.path == request.app[CONFIG].server.ai_sdk_chat_path:
        response = web.Response(text=error.message, status=error.status)
        response.headers.update(error.headers)
        return response
    return json_error(error, request.path)


_HTTP_ERROR_TYPES = {404: "not_found_error", 405: "invalid_request_error"}


@web.middleware
async def openai_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every error leaves in its API's shape (OpenAI's ``{"error": {message, type, param,
    code}}``, Anthropic's on ``ANTHROPIC_PATHS``, plain text on the AI SDK's chat path); no
    traceback leaks."""
    try:
        response = await handler(request)
    except RequestError as error:
        return _error_response(error, request)
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[CONFIG].server.max_body_bytes
        return _error_response(
            RequestError(
                f"Request body too large: the limit is {limit} bytes (server.max_body_bytes).",
                status=exc.status,
                code="request_too_large",
            ),
            request,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return web.json_response(
            error_body("The server had an error while processing your request.", "server_error"),
            status=500,
        )
    if response.status >= 400 and not response.prepared and response.content_type != (
        "application/json"
    ):
        # a returned (not raised) error, such as the static file handler's 404
        return _http_error(request, response)
    return response


def _http_error(request: web.Request, exc: web.StreamResponse) -> web.Response:
    """An aiohttp HTTP error (raised or returned) in the OpenAI shape, same status."""
    message = {
        404: f"Unknown path {request.path!r}. See GET /v1/models, POST "
        "/v1/chat/completions, GET /v1/stream, GET /healthz.",
        405: f"Method {request.method} is not allowed on {request.path}.",
    }.get(exc.status, exc.reason)
    http_error = RequestError(
        message,
        status=exc.status,
        error_type=_HTTP_ERROR_TYPES.get(exc.status, "invalid_request_error"),
        code=exc.reason.lower().replace(" ", "_"),
    )
    response = _error_response(http_error, request)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


@web.middleware
def valid_query(request: web.Request, handler: _Handler) -> Awaitable[web.StreamResponse]:
    # A plain function handing on the handler's awaitable: no frame of its own stays alive
    # (in memory) for the whole length of every stream.
    check_query_encoding(request.rel_url.raw_query_string)
    check_body_encoding(request.headers.get("Content-Encoding"))
    return handler(request)
