"""Helpers for the browser tests (importable as ``browser_support``)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

STREAM_LIMIT_MS = 30_000  # a bound for a reply to finish, not a timing check


class Server:
    """A running ``tokenstream serve``: its base URL and its log file."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/healthz", timeout=10) as response:
            health: dict[str, Any] = json.load(response)
            return health


def last_reply(page: Page) -> Locator:
    return page.locator(".message.assistant").last


def send(
    page: Page, prompt: str, *, transport: str = "fetch", profile: str = "fast",
    dialect: str | None = None,
) -> None:
    page.check(f"#transport-{transport}")
    if dialect is not None:
        page.select_option("#dialect", dialect)
    page.select_option("#profile", profile)
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")


def reply_text(page: Page) -> str:
    text: str = last_reply(page).locator(".text").evaluate("node => node.textContent")
    return text


def finish(page: Page, state: str = "done") -> None:
    expect(last_reply(page)).to_have_attribute("data-state", state, timeout=STREAM_LIMIT_MS)
