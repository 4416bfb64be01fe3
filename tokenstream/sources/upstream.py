"""Upstream source: an OpenAI-compatible server's streamed chat completion, as text deltas.

``UpstreamClient`` owns one ``http_client.ConnectionPool`` for the app's lifetime (opened
and closed by ``cleanup_ctx``). ``begin`` sends a request body to
``<base_url>/chat/completions`` and returns at once; ``PendingAnswer.reply`` returns once the
upstream has answered with its status. Any failure up to then is an ``UpstreamError``
carrying the status the client should get (the upstream's own, 502 when it cannot be
reached, 504 when it does not answer in time). ``UpstreamReply.items`` then yields the reply
as it arrives: text deltas (``str``) and ``Passthrough`` items for the rest. A failure from
there on is an ``UpstreamStreamError``.

The pure part, response bytes in and items out, is ``openai_chunks.ChunkDecoder``.

Timeouts run on the event loop's clock, not the pacing clock: they are about the network.
The upstream key is sent only in the request's ``Authorization`` header; it is never
logged, and any error text that could hold it is redacted before it reaches a log or a
client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from tokenstream.config import UpstreamConfig
from tokenstream.engine.events import ReplyEvent
from tokenstream.errors import ConfigError, UpstreamError, UpstreamStreamError
from tokenstream.sources.http_client import (
    ConnectError,
    ConnectionPool,
    ConnectTimeout,
    Exchange,
    HTTPClientError,
    Response,
)
from tokenstream.sources.openai_chunks import ChunkDecoder
from tokenstream.sources.secrets import redact

__all__ = [
    "UPSTREAM",
    "PendingAnswer",
    "UpstreamClient",
    "UpstreamReply",
    "error_from_response",
]

log = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 64 * 1024
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: tuple[str, ...],
    server_credentials: bool,
    api_key_env: str,
) -> UpstreamError:
    """The client's answer to an upstream's error status: the same status, OpenAI's shape."""
    message: str | None = None
    error_type: str | None = None
    param: str | None = None
    code: str | None = None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            error_type, param, code = error.get("type"), error.get("param"), error.get("code")
        elif isinstance(error, str):
            message = error
        else:
            message = payload.get("message") or payload.get("detail")
    if not message:
        text = body[:200].decode("utf-8", "replace").strip()
        message = f"The upstream answered HTTP {status}" + (f": {text}" if text else ".")
    if status in (401, 403) and server_credentials:
        # The key is the server's, not the client's: say so, and echo nothing of it.
        message = (
            f"The upstream refused tokenstream's credentials (HTTP {status}). The operator "
            f"must set a valid key in the environment variable {api_key_env} "
            "(upstream.api_key_env) and restart tokenstream."
        )
    extra_headers = {"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else {}
    return UpstreamError(
        redact(str(message), secrets),
        status=status,
        error_type=str(error_type) if error_type else _ERROR_TYPES.get(status, "upstream_error"),
        param=None if param is None else str(param),
        code=None if code is None else str(code),
        headers=extra_headers,
    )


async def _read_limited(response: Response, limit: int, idle_s: float) -> bytes:
    data = b""
    while len(data) < limit:
        async with asyncio.timeout(idle_s):
            chunk = await response.readany()
        if not chunk:
            break
        data += chunk
    return data[:limit]


class UpstreamReply:
    """A streaming answer whose status was 200: read it with ``items``, always ``close`` it.

    Its time limits (the first event by ``first_event_deadline``, then at most
    ``idle_timeout`` between reads) share one loop timer, which is moved only when it fires
    early; a timeout per read was a timer made and cancelled for every upstream chunk.
    """

    def __init__(
        self,
        response: Response,
        *,
        first_event_deadline: float,
        first_byte_timeout: float,
        idle_timeout: float,
        secrets: tuple[str, ...],
    ) -> None:
        self._response = response
        self._first_event_deadline = first_event_deadline
        self._first_byte_timeout = first_byte_timeout
        self._idle_timeout = idle_timeout
        self._secrets = secrets
        self._limit = first_event_deadline
        """When the current read must have returned, on the loop's clock."""
        self._timer: asyncio.TimerHandle | None = None

    async def items(self) -> AsyncGenerator[ReplyEvent, None]:
        """The reply as it arrives; raises ``UpstreamStreamError`` when it fails or stalls."""
        decoder = ChunkDecoder(self._secrets)
        response = self._response
        loop = asyncio.get_running_loop()
        complete = False
        try:
            while not decoder.done:
                try:
                    # What has already arrived needs no wait: a burst of chunks, or the
                    # first events that came in with the response's headers.
                    data = response.read_nowait()
                    if not data and not response.at_eof():
                        data = await self._wait_for_data(response, decoder.events)
                except HTTPClientError as exc:
                    raise UpstreamStreamError(
                        "The upstream connection failed during the reply: "
                        + redact(str(exc) or type(exc).__name__, self._secrets),
                        code="upstream_disconnected",
                    ) from None
                items = decoder.feed(data) if data else decoder.close()
                if decoder.events:  # from the first event on: idle_timeout between reads
                    self._limit = loop.time() + self._idle_timeout
                for item in items:
                    yield item
                if decoder.error is not None:
                    raise decoder.error
                if not data:
                    break
            complete = True
        finally:
            if self._timer is not None:
                self._timer.cancel()  # it holds this reply (a bound method) until cancelled
                self._timer = None
            if complete:
                self._response.release()  # back to the pool if the body was read to its end
            else:
                self._response.close()  # the upstream sees its connection close at once

    async def _wait_for_data(self, response: Response, events: int) -> bytes:
        """The next bytes of the reply, within the first-event or the idle time limit."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(self._limit, self._on_timer)
        try:
            return await response.readany()
        except TimeoutError:
            if events:
                silence = f"sent nothing for {self._idle_timeout:g} s (upstream.idle_timeout_s)"
            else:
                silence = (
                    f"sent no event within {self._first_byte_timeout:g} s of the request "
                    "(upstream.first_byte_timeout_s)"
                )
            raise UpstreamStreamError(f"The upstream {silence}.", code="upstream_timeout") from None

    def _on_timer(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._limit:  # data came since it was set: not yet
            self._timer = loop.call_at(self._limit, self._on_timer)
            return
        self._timer = None
        self._response.interrupt(TimeoutError())  # if no read waits, the next one sets it again

    def close(self) -> None:
        self._response.close()


class PendingAnswer:
    """A request on its way to the upstream: await ``reply`` (a stream) or ``response``, or
    ``close`` it. Every failure before the answer is an ``UpstreamError`` with the status the
    client should get (the upstream's own, 502 when it cannot be reached, 504 in time)."""

    __slots__ = ("_auth", "_client", "_deadline", "_path", "exchange", "secrets")

    def __init__(
        self, client: UpstreamClient, path: str, client_auth: str | None, deadline: float
    ) -> None:
        self._client = client
        self._path = path
        self._auth = client_auth
        self._deadline = deadline
        self.secrets = client._secrets(client_auth)
        self.exchange: Exchange | None = None

    @contextmanager
    def failures_mapped(self) -> Iterator[None]:
        config = self._client.config
        url = self._client.base_url + self._path
        secrets = self.secrets
        try:
            yield
        except ConnectTimeout:
            raise UpstreamError(
                f"Could not connect to the upstream within {config.connect_timeout_s:g} s "
                "(upstream.connect_timeout_s).",
                status=504,
                code="upstream_timeout",
            ) from None
        except TimeoutError:
            raise UpstreamError(
                f"The upstream did not answer within {config.first_byte_timeout_s:g} s "
                "(upstream.first_byte_timeout_s).",
                status=504,
                code="upstream_timeout",
            ) from None
        except ConnectError as exc:
            log.warning("cannot reach the upstream %s: %s", url, redact(str(exc), secrets))
            raise UpstreamError(
                f"Cannot reach the upstream at {url}: "
                + redact(str(exc.os_error) or type(exc).__name__, secrets),
                status=502,
                code="upstream_unreachable",
            ) from None
        except HTTPClientError as exc:
            raise UpstreamError(
                "The upstream connection failed before it answered: "
                + redact(str(exc) or type(exc).__name__, secrets),
                status=502,
                code="upstream_disconnected",
            ) from None

    async def response(self) -> Response:
        """The upstream's answer once its head arrived, if its status is a success."""
        assert self.exchange is not None
        with self.failures_mapped():
            async with asyncio.timeout_at(self._deadline):
                response = await self.exchange.response()
        if 300 <= response.status < 400:
            location = response.headers.get("Location", "?")
            response.close()
            raise UpstreamError(
                f"The upstream redirected the request (HTTP {response.status} to {location}): "
                "set upstream.base_url to the address it points to.",
                status=502,
                code="upstream_redirect",
            )
        if response.status >= 400:
            config = self._client.config
            try:
                raw = await _read_limited(response, _ERROR_BODY_LIMIT, config.idle_timeout_s)
            except (TimeoutError, HTTPClientError):
                raw = b""
            finally:
                response.close()
            error = error_from_response(
                response.status,
                raw,
                response.headers,
                secrets=self.secrets,
                server_credentials=self._auth is None,
                api_key_env=config.api_key_env,
            )
            log.warning("upstream answered HTTP %d: %s", response.status, error.message)
            raise error
        return response

    async def reply(self) -> UpstreamReply:
        """The streamed reply, once the upstream answered 200 with a stream."""
        response = await self.response()
        if response.content_type != "text/event-stream":
            response.close()
            raise UpstreamError(
                f"The upstream answered with Content-Type {response.content_type!r} instead of "
                "a text/event-stream: check upstream.base_url (it should end in /v1 for most "
                "servers).",
                status=502,
                code="upstream_not_streaming",
            )
        config = self._client.config
        return UpstreamReply(
            response,
            first_event_deadline=self._deadline,
            first_byte_timeout=config.first_byte_timeout_s,
            idle_timeout=config.idle_timeout_s,
            secrets=self.secrets,
        )

    def close(self) -> None:
        """Given up before the answer: the upstream sees the request go away."""
        if self.exchange is not None:
            self.exchange.close()


class UpstreamClient:
    """Forwards chat completions to one OpenAI-compatible server, over one connection pool."""

    def __init__(self, config: UpstreamConfig, api_key: str | None) -> None:
        if config.base_url is None:
            raise ValueError("UpstreamClient needs upstream.base_url")
        self.config = config
        self.base_url = config.base_url
        self.url = config.base_url + "/chat/completions"
        self._api_key = api_key or None
        self._pool: ConnectionPool | None = None

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
                "$%s is not set: requests go to the upstream without an Authorization header",
                config.api_key_env,
            )
        return cls(config, key or None)

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: the pool lives exactly as long as the app."""
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def start(self) -> None:
        from tokenstream import __version__

        config = self.config
        assert config.base_url is not None
        limit = config.max_connections
        if config.max_connections_per_host:  # one origin: the smaller of the two limits
            limit = min(limit, config.max_connections_per_host)
        # No proxy or .netrc credentials are picked up from the environment; the first-byte
        # and idle limits are applied per read, below.
        self._pool = ConnectionPool(
            config.base_url,
            limit=limit,
            connect_timeout=config.connect_timeout_s,  # includes waiting for a free slot
            user_agent=f"tokenstream/{__version__}",
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _secrets(self, client_auth: str | None) -> tuple[str, ...]:
        secrets = []
        if self._api_key:
            secrets.append(self._api_key)
        if client_auth:
            secrets.append(client_auth)
            token = client_auth.partition(" ")[2].strip()
            if token:
                secrets.append(token)
        return tuple(secrets)

    async def _begin(
        self,
        path: str,
        body: Mapping[str, Any] | bytes | None,
        client_auth: str | None,
        *,
        stream: bool = False,
    ) -> PendingAnswer:
        """POST ``body`` to ``base_url + path`` (GET without one) and return once it is sent.

        ``body`` is JSON: a mapping, or bytes already encoded (the client's own, unchanged).
        """
        if self._pool is None:
            raise RuntimeError("the upstream pool is not started (app.cleanup_ctx)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.first_byte_timeout_s
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if client_auth is not None:
            headers["Authorization"] = client_auth
        elif self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if body is None or isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        pending = PendingAnswer(self, path, client_auth, deadline)
        with pending.failures_mapped():
            async with asyncio.timeout_at(deadline):
                pending.exchange = await self._pool.send(
                    "GET" if body is None else "POST", path, headers, data
                )
        return pending

    async def begin(
        self, body: Mapping[str, Any] | bytes, client_auth: str | None
    ) -> PendingAnswer:
        """Send a streaming request and return at once; ``PendingAnswer.reply`` waits for the
        answer, so that the caller can get the stream ready meanwhile.

        ``client_auth`` (an ``Authorization`` value) replaces the configured key when given.
        """
        return await self._begin("/chat/completions", body, client_auth, stream=True)

    async def forward(
        self, body: Mapping[str, Any] | bytes, client_auth: str | None
    ) -> web.Response:
        """A request that does not stream: the upstream's answer, passed on as it came."""
        pending = await self._begin("/chat/completions", body, client_auth)
        return await self._pass_on(await pending.response(), pending.secrets)

    async def get(self, path: str, client_auth: str | None) -> web.Response:
        """``GET <base_url><path>`` (the model list), passed on as it came."""
        pending = await self._begin(path, None, client_auth)
        return await self._pass_on(await pending.response(), pending.secrets)

    async def _pass_on(self, response: Response, secrets: tuple[str, ...]) -> web.Response:
        try:
            async with asyncio.timeout(self.config.idle_timeout_s):
                raw = await response.read()
        except TimeoutError:
            raise UpstreamError(
                f"The upstream stopped sending its answer for {self.config.idle_timeout_s:g} s "
                "(upstream.idle_timeout_s).",
                status=504,
                code="upstream_timeout",
            ) from None
        except HTTPClientError as exc:
            raise UpstreamError(
                "The upstream connection failed during its answer: "
                + redact(str(exc) or type(exc).__name__, secrets),
                status=502,
                code="upstream_disconnected",
            ) from None
        finally:
            response.release()
        return web.Response(
            status=response.status,
            body=raw,
            content_type=response.content_type,
            charset=response.charset,
        )


UPSTREAM = web.AppKey("upstream", UpstreamClient)
