"""Upstream source: an OpenAI-compatible server's streamed chat completion, as text deltas.

``UpstreamClient`` owns one ``aiohttp.ClientSession`` for the app's lifetime (opened and
closed by ``cleanup_ctx``). ``begin`` starts a request to ``<base_url>/chat/completions`` and
returns at once; ``PendingAnswer.reply`` returns once the upstream has answered with its
status. Any failure up to then is an ``UpstreamError`` carrying the status the client should
get (the upstream's own, 502 when it cannot be reached, 504 when it does not answer in time).
``UpstreamReply.items`` then yields the reply as it arrives: text deltas (``str``) and
``Passthrough`` items for the rest. A failure from there on is an ``UpstreamStreamError``.

The pure part, response bytes in and items out, is ``openai_chunks.ChunkDecoder``.

The proxy comes from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), read at start-up.

A request is sent once, never again: a POST is not idempotent, and a completion sent twice
is generated and billed twice. aiohttp resends only idempotent methods (the model list)
when a reused connection turns out closed.

Timeouts run on the event loop's clock, not the pacing clock: they are about the network.
The upstream key is sent only in the request's ``Authorization`` header; it is never
logged, and any error text that could hold it is redacted before it reaches a log or a
client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from tokenstream.config import UpstreamConfig, ca_context
from tokenstream.engine.events import ReplyEvent
from tokenstream.errors import ConfigError, UpstreamError, UpstreamStreamError
from tokenstream.sources.openai_chunks import ChunkDecoder
from tokenstream.sources.secrets import redact

__all__ = [
    "UPSTREAM",
    "PendingAnswer",
    "UpstreamClient",
    "UpstreamReply",
    "error_from_response",
    "forwarded_headers",
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
_FORWARDED = frozenset({"retry-after", "retry-after-ms", "x-request-id"})
_FORWARDED_PREFIX = "x-ratelimit-"
_MAX_FORWARDED_VALUE = 1024
KEEPALIVE_S = 4.0
"""An idle connection is closed after this long: before the 5 s after which uvicorn (vLLM and
many Python servers) and Node close theirs, so that a request rarely meets a connection the
server is closing (which would fail it: it is not sent twice)."""
DRAIN_S = 1.0
"""How long a reply complete at its ``[DONE]`` may take for its body's end to arrive, after
which its connection is reused (a stream's last event often comes a write before the end)."""


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream's headers a client acts on (when to retry, its rate limits, the request
    id for the upstream's support), those whose value can be passed on unchanged."""
    kept: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if lower in seen or (lower not in _FORWARDED and not lower.startswith(_FORWARDED_PREFIX)):
            continue
        # visible ASCII and spaces only: a control character (CR, LF, ...) would make the
        # response to the client fail to be written, or split it
        if len(value) <= _MAX_FORWARDED_VALUE and value.isascii() and value.isprintable():
            kept[name] = value
            seen.add(lower)
        else:
            log.debug("upstream header %s dropped: its value cannot be passed on", name)
    return kept


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
    return UpstreamError(
        redact(str(message), secrets),
        status=status,
        error_type=str(error_type) if error_type else _ERROR_TYPES.get(status, "upstream_error"),
        param=None if param is None else str(param),
        code=None if code is None else str(code),
        headers=forwarded_headers(headers),
    )


async def _read_at_most(
    content: aiohttp.StreamReader, limit: int, idle_s: float
) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a body, each read within ``idle_s``; True if there was more."""
    parts: list[bytes] = []
    size = 0
    while True:
        async with asyncio.timeout(idle_s):
            chunk = await content.readany()
        if not chunk:
            return b"".join(parts), False
        if size + len(chunk) > limit:
            parts.append(chunk[: limit - size])
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)


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


class UpstreamReply:
    """A streaming answer whose status was 200: read it with ``items``, always ``close`` it.

    Its time limits: the first event by ``first_event_deadline``, then at most
    ``idle_timeout`` between reads. A read that finds bytes already arrived sets no timer.
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        *,
        first_event_deadline: float,
        first_byte_timeout: float,
        idle_timeout: float,
        max_line_chars: int,
        secrets: tuple[str, ...],
        release: Callable[[aiohttp.ClientResponse], None],
    ) -> None:
        self._response: aiohttp.ClientResponse | None = response
        self._first_event_deadline = first_event_deadline
        self._first_byte_timeout = first_byte_timeout
        self._idle_timeout = idle_timeout
        self._max_line_chars = max_line_chars
        self._secrets = secrets
        self._release = release

    async def items(self) -> AsyncGenerator[ReplyEvent, None]:
        """The reply as it arrives; raises ``UpstreamStreamError`` when it fails or stalls."""
        response = self._response
        if response is None:
            raise RuntimeError("the reply was read or closed already")
        decoder = ChunkDecoder(self._secrets, self._max_line_chars)
        content = response.content
        loop = asyncio.get_running_loop()
        limit = self._first_event_deadline
        complete = False
        try:
            while not decoder.done:
                try:
                    # What has already arrived needs no wait: a burst of chunks, or the
                    # first events that came in with the response's headers.
                    data = content.read_nowait()
                    if not data and not content.at_eof():
                        async with asyncio.timeout_at(limit):
                            data = await content.readany()
                except TimeoutError:
                    raise UpstreamStreamError(
                        self._silence(decoder.events), code="upstream_timeout"
                    ) from None
                except aiohttp.ClientError as exc:
                    raise UpstreamStreamError(
                        "The upstream connection failed during the reply: "
                        + redact(str(exc) or type(exc).__name__, self._secrets),
                        code="upstream_disconnected",
                    ) from None
                items = decoder.feed(data) if data else decoder.close()
                if decoder.events:  # from the first event on: idle_timeout between reads
                    limit = loop.time() + self._idle_timeout
                for item in items:
                    yield item
                if decoder.error is not None:
                    raise decoder.error
                if not data:
                    break
            complete = True
        finally:
            self._response = None
            if complete:
                self._release(response)  # its connection is reused once the body ended
            else:
                response.close()  # the upstream sees its connection close at once

    def _silence(self, events: int) -> str:
        if events:
            return (
                f"The upstream sent nothing for {self._idle_timeout:g} s "
                "(upstream.idle_timeout_s)."
            )
        return (
            f"The upstream sent no event within {self._first_byte_timeout:g} s of the request "
            "(upstream.first_byte_timeout_s)."
        )

    def close(self) -> None:
        """Given up: the connection is closed, unless the reply was read to its end."""
        if self._response is not None:
            self._response.close()
            self._response = None


class PendingAnswer:
    """A request on its way to the upstream: await ``reply`` (a stream) or ``response``, or
    ``close`` it. Every failure before the answer is an ``UpstreamError`` with the status the
    client should get (the upstream's own, 502 when it cannot be reached, 504 in time)."""

    __slots__ = ("_auth", "_client", "_deadline", "_path", "_request", "secrets")

    def __init__(
        self,
        client: UpstreamClient,
        path: str,
        client_auth: str | None,
        deadline: float,
        request: asyncio.Task[aiohttp.ClientResponse],
    ) -> None:
        self._client = client
        self._path = path
        self._auth = client_auth
        self._deadline = deadline
        self._request: asyncio.Task[aiohttp.ClientResponse] | None = request
        self.secrets = client._secrets(client_auth)

    @contextmanager
    def failures_mapped(self) -> Iterator[None]:
        """aiohttp's exceptions before the answer as the ``UpstreamError`` the client gets."""
        config = self._client.config
        url = self._client.base_url + self._path
        secrets = self.secrets
        try:
            yield
        except aiohttp.ConnectionTimeoutError:  # before TimeoutError, of which it is one
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
        except aiohttp.ClientConnectorCertificateError as exc:
            problem = exc.certificate_error
            reason = getattr(problem, "verify_message", None) or str(problem)
            message = (
                f"Cannot reach the upstream at {url}: its TLS certificate failed "
                f"verification ({reason}). Trust the CA that signed it with upstream.ca_file, "
                "or set upstream.verify_tls: false for a test server."
            )
            raise _unreachable(message, secrets) from None
        except aiohttp.ClientConnectorSSLError as exc:
            reason = getattr(exc.os_error, "reason", None) or str(exc.os_error)
            message = (
                f"Cannot reach the upstream at {url}: the TLS handshake failed ({reason}); "
                "check that upstream.base_url's scheme (https://) and port are right."
            )
            raise _unreachable(message, secrets) from None
        except aiohttp.ClientProxyConnectionError as exc:
            message = (
                f"Cannot reach the proxy {exc.host}:{exc.port} for the upstream at {url}: "
                f"{exc.os_error.strerror or exc.os_error}. The proxy comes from the "
                "environment (HTTPS_PROXY, HTTP_PROXY; NO_PROXY lists hosts reached directly)."
            )
            raise _unreachable(message, secrets) from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
            message = f"Cannot reach the upstream at {url}: {reason}"
            raise _unreachable(message, secrets) from None
        except aiohttp.ClientHttpProxyError as exc:
            message = (
                f"The proxy refused to connect to the upstream at {url} (HTTP {exc.status} "
                f"{exc.message}). The proxy comes from the environment (HTTPS_PROXY, "
                "HTTP_PROXY; NO_PROXY lists hosts reached directly)."
            )
            raise _unreachable(message, secrets) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                "The upstream connection failed before it answered: "
                + redact(str(exc) or type(exc).__name__, secrets),
                status=502,
                code="upstream_disconnected",
            ) from None

    async def response(self) -> aiohttp.ClientResponse:
        """The upstream's answer once its head arrived, if its status is a success."""
        request = self._request
        if request is None:
            raise RuntimeError("the answer was taken or given up already")
        self._request = None
        try:
            with self.failures_mapped():
                # a time limit or a cancellation here cancels the request: its connection
                # closes
                async with asyncio.timeout_at(self._deadline):
                    response = await request
        except BaseException:
            _discard(request)  # answered as the wait ended: that answer is not wanted
            raise
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
                raw, _ = await _read_at_most(
                    response.content, _ERROR_BODY_LIMIT, config.idle_timeout_s
                )
            except (TimeoutError, aiohttp.ClientError):
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
            max_line_chars=config.max_line_chars,
            secrets=self.secrets,
            release=self._client._release,
        )

    def close(self) -> None:
        """Given up before the answer: the upstream sees the request go away."""
        if self._request is not None:
            _discard(self._request)
            self._request = None


def _discard(request: asyncio.Task[aiohttp.ClientResponse]) -> None:
    """A request whose answer is not wanted: cancelled, or its response closed."""
    if not request.done():
        request.cancel()  # aiohttp closes the connection of a cancelled request
    elif not request.cancelled() and request.exception() is None:  # retrieved: not logged
        request.result().close()


def _unreachable(message: str, secrets: tuple[str, ...]) -> UpstreamError:
    message = redact(message, secrets)
    log.warning("upstream unreachable: %s", message)
    return UpstreamError(message, status=502, code="upstream_unreachable")


class UpstreamClient:
    """Forwards chat completions to one OpenAI-compatible server, over one client session."""

    def __init__(self, config: UpstreamConfig, api_key: str | None) -> None:
        if config.base_url is None:
            raise ValueError("UpstreamClient needs upstream.base_url")
        self.config = config
        self.base_url = config.base_url
        self.url = config.base_url + "/chat/completions"
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
                "$%s is not set: requests go to the upstream without an Authorization header",
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
        tls = _tls(config)
        self._proxy = _proxy_from_environment(self.base_url)
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
        """POST ``body`` to ``base_url + path`` (GET without one) and return at once.

        ``body`` is JSON: a mapping, or bytes already encoded (the client's own, unchanged).
        """
        session = self._session
        if session is None:
            raise RuntimeError("the upstream session is not started (app.cleanup_ctx)")
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if client_auth is not None:
            if not (client_auth.isascii() and client_auth.isprintable()):
                raise UpstreamError(
                    "The Authorization header holds characters that cannot be sent on to the "
                    "upstream: send the key as visible ASCII.",
                    status=400,
                    error_type="invalid_request_error",
                    code="invalid_authorization",
                )
            headers["Authorization"] = client_auth
        elif self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if body is None or isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        deadline = asyncio.get_running_loop().time() + self.config.first_byte_timeout_s
        method = "GET" if body is None else "POST"
        request = asyncio.create_task(
            _send(session, method, self.base_url + path, headers, data, self._proxy)
        )
        pending = PendingAnswer(self, path, client_auth, deadline, request)
        try:
            await asyncio.sleep(0)  # the request goes out now, while the caller gets ready
        except BaseException:
            pending.close()
            raise
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
        return await self._pass_on(pending)

    async def get(self, path: str, client_auth: str | None) -> web.Response:
        """``GET <base_url><path>`` (the model list), passed on as it came."""
        pending = await self._begin(path, None, client_auth)
        return await self._pass_on(pending)

    async def _pass_on(self, pending: PendingAnswer) -> web.Response:
        config = self.config
        response = await pending.response()
        try:
            raw, more = await _read_at_most(
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


async def _send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    data: bytes | None,
    proxy: URL | None,
) -> aiohttp.ClientResponse:
    # no redirect is followed: a 3xx is an error that says where it points
    return await session.request(
        method, URL(url), headers=headers, data=data, allow_redirects=False, proxy=proxy
    )


def _proxy_from_environment(base_url: str) -> URL | None:
    """The proxy HTTPS_PROXY or HTTP_PROXY names for the upstream, unless NO_PROXY covers its
    host (credentials in its URL are sent to it as ``Proxy-Authorization``).

    Read once, with the functions aiohttp's ``trust_env`` calls: with ``trust_env`` aiohttp
    reads them again for every request, in a worker thread, which cost 0.3-0.5 ms on the
    way to each first token (and .netrc too, for requests sent without a key).
    """
    upstream = URL(base_url)
    if upstream.host is None or urllib.request.proxy_bypass(upstream.host):
        return None
    value = urllib.request.getproxies().get(upstream.scheme)
    if not value:
        return None
    try:
        proxy = URL(value)
    except ValueError:
        proxy = URL()
    if proxy.scheme != "http" or proxy.host is None:
        log.warning(
            "the proxy in %s_PROXY is not used: give it as http://HOST:PORT",
            upstream.scheme.upper(),
        )
        return None
    log.info("requests to the upstream go through the proxy %s", proxy.with_user(None))
    return proxy


def _tls(config: UpstreamConfig) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl`` for the upstream: the system's CAs, ``ca_file``'s, or no check."""
    if not config.verify_tls:
        log.warning("upstream.verify_tls is false: the upstream's certificate is not checked")
        return False
    if config.ca_file is None:
        return True
    try:
        return ca_context(config.ca_file)
    except ValueError as exc:
        raise ConfigError("the upstream settings", [("upstream.ca_file", str(exc))]) from None


UPSTREAM = web.AppKey("upstream", UpstreamClient)
