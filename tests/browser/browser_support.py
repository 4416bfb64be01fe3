"""Helpers for the browser tests (importable as ``browser_support``)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any


class Server:
    """A running ``tokenstream serve``: its base URL and its log file."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/healthz", timeout=10) as response:
            health: dict[str, Any] = json.load(response)
            return health
