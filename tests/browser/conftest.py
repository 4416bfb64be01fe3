"""Fixtures for the browser tests: a real ``tokenstream serve`` and Debian's Chromium.

Chromium comes from the distribution (``apt-get install chromium``), driven by Playwright
through ``executable_path``; Playwright's own browser download is not used (it needs the
internet). Without ``/usr/bin/chromium`` these tests are skipped, saying why.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from browser_support import Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
SERVER_START_LIMIT_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_announcement(process: subprocess.Popen[str]) -> str:
    """The server's first stdout line, printed once it listens ('' if it exited)."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=SERVER_START_LIMIT_S):
            return ""
    return process.stdout.readline()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium) "
            "to run the browser tests"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``tokenstream serve`` on a free port, as a user runs it (embedded defaults, but for a
    short ``resume.linger_s``: a stopped reply, which could be resumed, lingers that long; a
    module's ``RESUME_LINGER_S`` sets it)."""
    port = _free_port()
    directory = tmp_path_factory.mktemp("server")
    log = directory / "server.log"
    config = directory / "config.yaml"
    linger_s = getattr(request.module, "RESUME_LINGER_S", 0.5)
    config.write_text(f"resume:\n  linger_s: {linger_s}\n")
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokenstream", "serve", "--port", str(port),
             "--config", str(config), "--log-level", "WARNING"],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    try:
        announcement = _wait_for_announcement(process)
        if "serving on" not in announcement:
            pytest.fail(f"tokenstream serve did not start: {announcement!r}\n{log.read_text()}")
        yield Server(f"http://127.0.0.1:{port}", log)
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """The demo page, loaded and ready; fails the test on any uncaught script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """``build/screenshots`` (not committed); ``TOKENSTREAM_SCREENSHOT_DIR=docs`` updates the
    README's screenshots."""
    directory = Path(os.environ.get("TOKENSTREAM_SCREENSHOT_DIR", REPO / "build" / "screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory
