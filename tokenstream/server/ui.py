"""The demo page and pacing lab: static files shipped in the package, served at ``/``.

The files in ``tokenstream/static/`` are read once, when the app is built, and served from
memory by exact name. A request can only name a file that is in that folder (no ``/``, no
``..``), so there is no path to traverse, and an installed package serves the same page.

The page is plain HTML, CSS and ES modules: no build step, nothing fetched from elsewhere.
The Content-Security-Policy says so to the browser too (``default-src 'self'``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from aiohttp import web

from tokenstream.errors import NotFound

__all__ = ["CONTENT_TYPES", "StaticFile", "add_ui_routes", "load_static_files"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # revalidate on every load (cheap: ETag), so an upgraded package never shows a stale page
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> StaticFile:
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def load_static_files(root: Traversable | None = None) -> dict[str, StaticFile]:
    """Every servable file directly in ``root`` (default: the package's ``static`` folder)."""
    root = root if root is not None else files("tokenstream").joinpath("static")
    loaded: dict[str, StaticFile] = {}
    if not root.is_dir():
        return loaded
    for entry in root.iterdir():
        content_type = CONTENT_TYPES.get(_suffix(entry.name))
        if content_type is not None and entry.is_file() and not entry.name.startswith("."):
            loaded[entry.name] = StaticFile.of(entry.read_bytes(), content_type)
    return loaded


def _respond(request: web.Request, static: StaticFile) -> web.Response:
    headers = {**_HEADERS, "ETag": static.etag}
    if static.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=static.body, headers={**headers, "Content-Type": static.content_type})


class _StaticHandlers:
    def __init__(self, static: dict[str, StaticFile]) -> None:
        self._static = static

    async def index(self, request: web.Request) -> web.Response:
        return _respond(request, self._static["index.html"])

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        static = self._static.get(name)
        if static is None:
            raise NotFound(
                f"No static file {name!r}. The page's files are: "
                f"{', '.join(sorted(self._static))}.",
                code="not_found",
            )
        return _respond(request, static)


def add_ui_routes(app: web.Application, static: dict[str, StaticFile] | None = None) -> None:
    """Register ``GET /`` (the page) and ``GET /static/{name}`` (its files)."""
    static = static if static is not None else load_static_files()
    if "index.html" not in static:
        raise RuntimeError(
            "tokenstream/static/index.html is missing from the installed package; "
            "reinstall tokenstream (the static files are package data)."
        )
    handlers = _StaticHandlers(static)
    app.router.add_get("/", handlers.index)
    app.router.add_get("/static/{name}", handlers.asset)
