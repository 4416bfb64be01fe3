"""A tokenstream server in-process, for tests: on a free port, in a background thread with
its own event loop (so a synchronous test, using the synchronous OpenAI client, can call it),
controlled through the control API (``/_tokenstream/``)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from tokenstream.config import Config, validate_mapping
from tokenstream.server.app import create_app
from tokenstream.sources.matching import TEST_ID_HEADER

__all__ = ["ControlError", "TokenstreamServer"]

TEST_DEFAULTS: dict[str, Any] = {
    "default_profile": "instant",
    "server": {"shutdown_grace_s": 0},
}
"""What a test server changes from the defaults: replies unpaced, no grace at shutdown."""

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0


class ControlError(Exception):
    """The control API refused a call (an invalid rule, a wrong key)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


class TokenstreamServer:
    """``with TokenstreamServer(rules=[...]) as server:`` a server at ``server.base_url``.

    ``config``: a mapping merged onto the defaults as a config file is (``TEST_DEFAULTS``
    first); ``rules``: the config's ``responses.rules``. Both are validated at once: a bad
    one raises ``ConfigError`` naming the key and the reason. ``TOKENSTREAM_API_KEYS`` is
    not read: keys come from the config alone, and the first one is used for the control
    API.
    """

    def __init__(
        self,
        *,
        rules: Sequence[Mapping[str, Any]] | None = None,
        config: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        data = _merged(TEST_DEFAULTS, config or {})
        if rules is not None:
            data = _merged(data, {"responses": {"rules": [dict(rule) for rule in rules]}})
        self.config: Config = validate_mapping(data, "the tokenstream test server's config")
        self.host = host
        self.port: int | None = None
        keys = self.config.server.api_keys
        self._key = keys[0].get_secret_value() if keys else None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- where it is -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the Anthropic SDK's ``base_url``, and the root of
        ``/v1/stream``, ``/api/chat`` and the control API."""
        if self.port is None:
            raise RuntimeError("the server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url + "/v1"``: the OpenAI SDK's ``base_url``."""
        return self.base_url + "/v1"

    # -- running ---------------------------------------------------------------------------

    def start(self) -> TokenstreamServer:
        if self._thread is not None or self._ready.is_set():
            raise RuntimeError("a TokenstreamServer runs once: it has been started already")
        self._thread = threading.Thread(target=self._run, name="tokenstream-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise RuntimeError(f"the server did not start within {_START_TIMEOUT_S:g} s")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving (a stream still open gets the server's shutdown error) and wait."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"the server did not stop within {_STOP_TIMEOUT_S:g} s")
        self._thread = None
        self.port = None
        if self._error is not None:  # the server failed while it served, or stopping
            raise self._error

    def __enter__(self) -> TokenstreamServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # handed to start(), in the test's thread
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        app = create_app(self.config, environ={})
        runner = web.AppRunner(
            app,
            handle_signals=False,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=self.config.server.send_timeout_s + 2,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, 0)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    # -- the control API -------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, test_id: str | None = None, body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> Any:
        url = self.base_url + "/_tokenstream/" + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Content-Type": "application/json"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key}"
        if test_id is not None:
            headers[TEST_ID_HEADER] = test_id
        data = None if body is None else json.dumps(body).encode()
        call = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(call, timeout=30) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            with exc:
                text = exc.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text
            raise ControlError(exc.code, message) from None

    def add_rules(
        self, rules: Sequence[Mapping[str, Any]], *, test_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Add rules in front of the others (``POST /_tokenstream/rules``); with ``test_id``
        they answer only requests carrying ``X-Tokenstream-Test-Id: test_id``."""
        answer = self._call("POST", "rules", test_id=test_id, body=[dict(r) for r in rules])
        added: list[dict[str, Any]] = answer["added"]
        return added

    def clear_rules(self, *, test_id: str | None = None) -> int:
        """Remove the rules added (one test's, or all) and restart their sequences."""
        deleted: int = self._call("DELETE", "rules", test_id=test_id)["deleted"]
        return deleted

    def journal(
        self, *, test_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The requests received, oldest first (``GET /_tokenstream/journal``)."""
        query = {"limit": str(limit)} if limit is not None else None
        entries: list[dict[str, Any]] = self._call(
            "GET", "journal", test_id=test_id, query=query
        )["entries"]
        return entries

    def clear_journal(self, *, test_id: str | None = None) -> int:
        deleted: int = self._call("DELETE", "journal", test_id=test_id)["deleted"]
        return deleted
