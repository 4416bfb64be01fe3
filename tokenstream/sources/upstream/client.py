"""The upstream client: one ``aiohttp.ClientSession`` to a model server.

``UpstreamClient`` owns one ``aiohttp.ClientSession`` for the app's lifetime (opened and
closed by ``cleanup_ctx``). ``begin`` starts a request to ``<base_url>/chat/completions``
(``/responses``, ``/messages``: the path of ``upstream.dialect``, see ``wire``) and returns
at once; ``PendingAnswer.reply`` returns once the upstream has answered with its
status. Any failure up to then is an ``UpstreamError`` carrying the status the client should
get (the upstream's own, 502 when it cannot be reached, 504 when it does not answer in time).
``UpstreamReply.items`` then yields the reply's events as they arrive
(``engine.events``). A failure from there on is an ``UpstreamStreamError``.

The pure part, response bytes in and items out, is the dialect's decoder
(``openai_chunks``, ``responses_events``, ``anthropic_events``).

The proxy comes from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), read at start-up.

A request is sent once, never again: a POST is not idempotent, and a completion sent twice
is generated and billed twice. aiohttp resends only idempotent methods (the model list)
when a reused connection turns out closed.

Timeouts run on the event loop's clock, not the pacing clock: they are about the network.
The upstream key is sent only in the request's ``Authorization`` header (``x-api-key`` to an
Anthropic upstream); it is never logged, and any error text that could hold it is redacted
before it reaches a log or a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from tokenstream.config import UpstreamConfig
from tokenstream.errors import ConfigError, UpstreamError
from tokenstream.sources.secrets import redact
from tokenstream.sources.upstream.answers import (
    forwarded_headers,
    read_at_most,
)
from tokenstream.sources.upstream.connection import (
    KEEPALIVE_S,
    proxy_from_environment,
    send,
    tls_setting,
)
from tokenstream.sources.upstream.pending import PendingAnswer
from tokenstream.sources.upstream.wire import REPLY_PATHS, dialect_headers

__all__ = ["UPSTREAM", "PendingAnswer", "UpstreamClient"]

log = logging.getLogger(__name__)

DRAIN_S = 1.0
"""How long a reply complete at its ``[DONE]`` may take for its body's end to arrive, after
which its connection is reused (a stream's last event often comes a write before the end)."""


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Wait a little for the end of a body whose reply is complete, then release it."""
    try:
        async with asyncio.timeout(DRAIN_S):
            while await response.content.readany():
                pass  # after the [DONE]: nothing anyone reads
    except (TimeoutError, aiohttp.ClientError):
        pass
    finally:
        response.release()  # to the pool if the body ended, else its connection is closed


class UpstreamClient:
    """Forwards requests to one model server, in its dialect, over one client session."""

    def __init__(self, config: UpstreamConfig, api_key: str | None) -> None:
        if config.base_url is None:
            raise ValueError("UpstreamClient needs upstream.base_url")
        self.config = config
        self.base_url = config.base_url
        self.reply_path = REPLY_PATHS[config.dialect]
        self._api_key = api_key or None
        self._session: aiohttp.ClientSession | None = None
        self._proxy: URL | None = None
        self._draining: set[asyncio.Task[None]] = set()

    @classmethod
    def from_environment(
        cls, config: UpstreamConfig, environ: Mapping[str, str]
    ) -> UpstreamClient:
        """Read the key from the variable ``config.api_key_env`` names; unset means no key."""
        key = environ.get(config.api_key_env, "").strip()
        if any(not (33 <= ord(char) <= 126) for char in key):
            raise ConfigError(
                "the environment",
                [(
                    "upstream.api_key_env",
                    f"${config.api_key_env} holds spaces or characters an HTTP header cannot "
                    "carry; set it to the key alone",
                )],
            )
        if not key:
            log.warning(
                "$%s is not set: requests go to the upstream without a key",
                config.api_key_env,
            )
        return cls(config, key or None)

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: the session lives exactly as long as the app."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def start(self) -> None:
        config = self.config
        tls = tls_setting(config)
        self._proxy = proxy_from_environment(self.base_url)
        try:
            agent = f"tokenstream/{version('tokenstream')}"
        except PackageNotFoundError:  # run from a source tree that was never installed
            agent = "tokenstream"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=config.max_connections,
                limit_per_host=config.max_connections_per_host,
                keepalive_timeout=KEEPALIVE_S,
                ssl=tls,
            ),
            # connect: a new connection, or a free one when max_connections are in use; the
            # first-byte and idle limits are applied by the reads themselves, below
            timeout=aiohttp.ClientTimeout(total=None, connect=config.connect_timeout_s),
            trust_env=False,  # the environment's proxy is read above, once
            # a cookie one client's answer set must not go upstream with another's request
            cookie_jar=aiohttp.DummyCookieJar(),
            # a compressed stream would reach tokenstream in the compressor's blocks
            headers={"User-Agent": agent, "Accept-Encoding": "identity"},
        )

    async def close(self) -> None:
        draining = list(self._draining)
        for task in draining:
            task.cancel()
        if draining:
            await asyncio.wait(draining)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _release(self, response: aiohttp.ClientResponse) -> None:
        """A reply read to its end: its connection back to the pool once its body ended."""
        if response.content.at_eof():
            response.release()
            return
        task = asyncio.get_running_loop().create_task(_drain(response))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _secrets(self, client_key: str | None) -> tuple[str, ...]:
        return tuple(key for key in (self._api_key, client_key) if key)

    async def _begin(
        self,
        path: str,
        body: Mapping[str, Any] | bytes | None,
        client_key: str | None,
        *,
        stream: bool = False,
    ) -> PendingAnswer:
        """POST ``body`` to ``base_url + path`` (GET without one) and return at once.

        ``body`` is JSON: a mapping, or bytes already encoded (the client's own, unchanged).
        ``client_key`` (the client's own key) replaces the configured key when given.
        """
        session = self._session
        if session is None:
            raise RuntimeError("the upstream session is not started (app.cleanup_ctx)")
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if client_key is not None and not (client_key.isascii() and client_key.isprintable()):
            raise UpstreamError(
                "The API key (Authorization or x-api-key header) holds characters that cannot "
                "be sent on to the upstream: send the key as visible ASCII.",
                status=400,
                error_type="invalid_request_error",
                code="invalid_authorization",
            )
        key = self._api_key if client_key is None else client_key
        headers.update(dialect_headers(self.config.dialect, key))
        if body is None or isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        deadline = asyncio.get_running_loop().time() + self.config.first_byte_timeout_s
        method = "GET" if body is None else "POST"
        request = asyncio.create_task(
            send(session, method, self.base_url + path, headers, data, self._proxy)
        )
        pending = PendingAnswer(
            self.config,
            self.base_url + path,
            request,
            client_key=client_key,
            secrets=self._secrets(client_key),
            deadline=deadline,
            release=self._release,
        )
        try:
            await asyncio.sleep(0)  # the request goes out now, while the caller gets ready
        except BaseException:
            pending.close()
            raise
        return pending

    async def begin(
        self, body: Mapping[str, Any] | bytes, client_key: str | None
    ) -> PendingAnswer:
        """Send a streaming request and return at once; ``PendingAnswer.reply`` waits for the
        answer, so that the caller can get the stream ready meanwhile.

        ``client_key`` (the client's own key) replaces the configured key when given.
        """
        return await self._begin(self.reply_path, body, client_key, stream=True)

    async def forward(
        self, body: Mapping[str, Any] | bytes, client_key: str | None
    ) -> web.Response:
        """A request that does not stream: the upstream's answer, passed on as it came."""
        pending = await self._begin(self.reply_path, body, client_key)
        return await self._pass_on(pending)

    async def get(self, path: str, client_key: str | None) -> web.Response:
        """``GET <base_url><path>`` (the model list), passed on as it came."""
        pending = await self._begin(path, None, client_key)
        return await self._pass_on(pending)

    async def _pass_on(self, pending: PendingAnswer) -> web.Response:
        config = self.config
        response = await pending.response()
        try:
            raw, more = await read_at_most(
                response.content, config.max_body_bytes, config.idle_timeout_s
            )
        except TimeoutError:
            raise UpstreamError(
                f"The upstream stopped sending its answer for {config.idle_timeout_s:g} s "
                "(upstream.idle_timeout_s).",
                status=504,
                code="upstream_timeout",
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                "The upstream connection failed during its answer: "
                + redact(str(exc) or type(exc).__name__, pending.secrets),
                status=502,
                code="upstream_disconnected",
            ) from None
        finally:
            response.release()  # to the pool if the body ended, else its connection is closed
        if more:
            log.warning("upstream answer over upstream.max_body_bytes (%d)", config.max_body_bytes)
            raise UpstreamError(
                f"The upstream's answer is larger than {config.max_body_bytes} bytes "
                "(upstream.max_body_bytes): raise it to pass on answers this large.",
                status=502,
                code="upstream_too_large",
            )
        return web.Response(
            status=response.status,
            body=raw,
            content_type=response.content_type,
            charset=response.charset,
            headers=forwarded_headers(response.headers),
        )



UPSTREAM = web.AppKey("upstream", UpstreamClient)
