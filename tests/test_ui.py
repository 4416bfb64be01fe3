"""The demo page's routes: files served from package data, content types, no path traversal.

What the page does in a browser is tested in ``tests/browser/``.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from tokenstream.server.ui import CONTENT_TYPES, StaticFile, add_ui_routes, load_static_files

from support import MakeClient

STATIC = files("tokenstream").joinpath("static")
NAMES = sorted(entry.name for entry in STATIC.iterdir() if not entry.name.startswith("."))


def test_every_static_file_has_a_content_type() -> None:
    assert "index.html" in NAMES
    for name in NAMES:
        assert Path(name).suffix in CONTENT_TYPES, f"{name}: add its type to ui.CONTENT_TYPES"


async def test_page_at_root(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    body = await response.text()
    assert body == STATIC.joinpath("index.html").read_text(encoding="utf-8")
    assert '<script type="module" src="/static/app.js">' in body


@pytest.mark.parametrize("name", NAMES)
async def test_each_file_with_its_type(make_client: MakeClient, name: str) -> None:
    client = await make_client()
    response = await client.get(f"/static/{name}")
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPES[Path(name).suffix]
    assert await response.read() == STATIC.joinpath(name).read_bytes()


def _references() -> set[str]:
    """Every /static/ URL in the page and every module a script imports."""
    found = set(re.findall(r'"/static/([^"]+)"', STATIC.joinpath("index.html").read_text()))
    for name in NAMES:
        if name.endswith(".js"):
            found |= set(re.findall(r'from "\./([^"]+)"', STATIC.joinpath(name).read_text()))
    return found


def test_page_references_only_shipped_files() -> None:
    references = _references()
    assert {"app.js", "sse.js", "style.css"} <= references
    assert references <= set(NAMES)


def test_page_loads_nothing_from_elsewhere() -> None:
    """Offline: no CDN, no absolute URL in any file the page loads."""
    for name in NAMES:
        text = STATIC.joinpath(name).read_text(encoding="utf-8")
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", text)
        # the SVG namespace and spec links in comments are names, not fetched resources
        fetched = [u for u in urls if "w3.org" not in u and "html.spec.whatwg.org" not in u]
        assert fetched == [], f"{name} refers to {fetched}"


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2fapp.py",
        "/static/..%2F..%2Fpyproject.toml",
        "/static/%2e%2e%2fui.py",
        "/static/ui.py",
        "/static/.hidden",
        "/static/",
        "/static/index.html%00.py",
        "/static/..\\app.py",
    ],
)
async def test_no_path_leaves_the_static_files(make_client: MakeClient, path: str) -> None:
    client = await make_client()
    response = await client.get(path)
    assert response.status == 404
    body = await response.json()
    assert body["error"]["type"] == "not_found_error"


async def test_dot_segments_do_not_escape(make_client: MakeClient) -> None:
    client = await make_client()
    for path in ("/static/../app.py", "/static/./../../pyproject.toml"):
        response = await client.get(path)
        assert response.status == 404
        text = await response.text()
        assert "import" not in text and "[project]" not in text


async def test_unknown_file_names_the_files(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/static/missing.js")
    assert response.status == 404
    message = (await response.json())["error"]["message"]
    assert "missing.js" in message and "app.js" in message


async def test_etag_revalidation(make_client: MakeClient) -> None:
    client = await make_client()
    first = await client.get("/static/app.js")
    etag = first.headers["ETag"]
    again = await client.get("/static/app.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    changed = await client.get("/static/app.js", headers={"If-None-Match": '"other"'})
    assert changed.status == 200


async def test_head(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.head("/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"


def test_load_static_files_skips_what_it_cannot_serve(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path / "a.js").write_text("export {}")
    (tmp_path / "notes.txt").write_text("not served")
    (tmp_path / ".hidden.js").write_text("not served")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.js").write_text("not served")
    loaded = load_static_files(tmp_path)
    assert sorted(loaded) == ["a.js", "index.html"]
    assert loaded["a.js"] == StaticFile.of(b"export {}", "text/javascript; charset=utf-8")


async def test_serves_another_folder(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>other</p>")
    app = web.Application()
    add_ui_routes(app, load_static_files(tmp_path))
    client = await aiohttp_client(app)
    assert await (await client.get("/")).text() == "<p>other</p>"


def test_missing_index_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="reinstall"):
        add_ui_routes(web.Application(), load_static_files(tmp_path))
