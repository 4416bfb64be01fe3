"""CORS: let a browser app on an allowed origin call the API and read streamed replies.

The few headers of the Fetch standard's CORS protocol, written out:

- a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an
  allowed origin, for a route and headers we accept, gets 204 with
  ``Access-Control-Allow-Origin`` (the origin, echoed), ``-Allow-Methods`` (the route's),
  ``-Allow-Headers`` (the requested ones) and ``-Max-Age``; a refused one gets a JSON error
  without those headers, so the browser stops and the reason shows in its network panel;
- every other response to an allowed origin carries ``Access-Control-Allow-Origin`` and
  ``Access-Control-Expose-Headers: Retry-After`` (set when the response is prepared, so a
  stream gets them before its first byte).

Every response varies by ``Origin``. No credentials mode: keys travel in ``Authorization``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from tokenstream.errors import NotFound, RequestError

__all__ = ["ALLOWED_REQUEST_HEADERS", "CorsPolicy", "cors_preflight_middleware"]

ALLOWED_REQUEST_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "accept",
        "last-event-id",
        "x-tokenstream-profile",
        # what the official OpenAI JavaScript SDK sends from a browser
        "openai-organization",
        "openai-project",
        "openai-beta",
    }
)
# the OpenAI SDKs' own headers, and tokenstream's (profile, session, test id)
_ALLOWED_PREFIXES = ("x-stainless-", "x-tokenstream-")
_MAX_AGE_S = "600"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CorsPolicy:
    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origins)
        self.any_origin = "*" in self.origins

    def __bool__(self) -> bool:
        return bool(self.origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin in self.origins)

    async def on_response_prepare(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        """``app.on_response_prepare`` hook: the CORS headers of an actual request."""
        _add_vary(response, "Origin")
        origin = request.headers.get("Origin")
        if origin is not None and self.allows(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = (
                "Retry-After, X-Tokenstream-Stream-Id"
            )


def _add_vary(response: web.StreamResponse, *names: str) -> None:
    existing = response.headers.get("Vary")
    if existing is None:  # nearly every response: no need to read what is there
        response.headers["Vary"] = ", ".join(names)
        return
    present = {part.strip().lower() for part in existing.split(",")}
    missing = [name for name in names if name.lower() not in present]
    if missing:
        response.headers["Vary"] = ", ".join([existing, *missing] if existing else missing)


def _header_allowed(name: str) -> bool:
    return name in ALLOWED_REQUEST_HEADERS or name.startswith(_ALLOWED_PREFIXES)


def _route_methods(request: web.Request) -> set[str]:
    """The methods the requested path answers, or NotFound."""
    exception = request.match_info.http_exception
    if isinstance(exception, web.HTTPMethodNotAllowed):
        return set(exception.allowed_methods)
    if exception is not None:
        raise NotFound(f"Unknown path {request.path!r}.", code="not_found")
    route = request.match_info.route
    return {route.method} if route.method != "*" else {"GET", "POST"}


def cors_preflight_middleware(policy: CorsPolicy) -> Middleware:
    @web.middleware
    def preflight(request: web.Request, handler: _Handler) -> Awaitable[web.StreamResponse]:
        # A plain function handing on the handler's awaitable: no frame of its own stays
        # alive (in memory) for the whole length of every stream.
        origin = request.headers.get("Origin")
        wanted = request.headers.get("Access-Control-Request-Method")
        if request.method != "OPTIONS" or origin is None or wanted is None:
            return handler(request)
        return answer(request, origin, wanted)

    async def answer(request: web.Request, origin: str, wanted: str) -> web.StreamResponse:
        if not policy.allows(origin):
            raise RequestError(
                f"Origin {origin!r} may not call this API from a browser. Add it to "
                "server.cors_origins to allow it.",
                status=403,
                error_type="permission_error",
                code="cors_origin_not_allowed",
            )
        methods = _route_methods(request)
        if wanted.upper() not in methods:
            raise RequestError(
                f"{request.path} does not accept {wanted.upper()}; it accepts "
                f"{', '.join(sorted(methods))}.",
                status=405,
                code="method_not_allowed",
            )
        requested = [
            name.strip().lower()
            for name in request.headers.get("Access-Control-Request-Headers", "").split(",")
            if name.strip()
        ]
        refused = [name for name in requested if not _header_allowed(name)]
        if refused:
            raise RequestError(
                f"Request header(s) not allowed from a browser: {', '.join(refused)}. Allowed: "
                f"{', '.join(sorted(ALLOWED_REQUEST_HEADERS))}, x-stainless-*.",
                status=403,
                error_type="permission_error",
                code="cors_header_not_allowed",
            )
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ", ".join(sorted(methods))
        if requested:
            response.headers["Access-Control-Allow-Headers"] = ", ".join(requested)
        response.headers["Access-Control-Max-Age"] = _MAX_AGE_S
        _add_vary(response, "Origin", "Access-Control-Request-Method",
                  "Access-Control-Request-Headers")
        return response

    return preflight
