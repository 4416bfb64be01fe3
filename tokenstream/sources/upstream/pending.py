"""A request on its way to the upstream, until its answer: the status it came with, or the
``UpstreamError`` a failure before it becomes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import aiohttp

from tokenstream.config import UpstreamConfig
from tokenstream.errors import UpstreamError
from tokenstream.sources.secrets import redact
from tokenstream.sources.upstream.answers import (
    ERROR_BODY_LIMIT,
    error_from_response,
    read_at_most,
)
from tokenstream.sources.upstream.reply import UpstreamReply
from tokenstream.sources.upstream.wire import decoder_for

__all__ = ["PendingAnswer"]

log = logging.getLogger(__name__)


class PendingAnswer:
    """A request on its way to the upstream: await ``reply`` (a stream) or ``response``, or
    ``close`` it. Every failure before the answer is an ``UpstreamError`` with the status the
    client should get (the upstream's own, 502 when it cannot be reached, 504 in time)."""

    __slots__ = ("_auth", "_config", "_deadline", "_release", "_request", "_url", "secrets")

    def __init__(
        self,
        config: UpstreamConfig,
        url: str,
        request: asyncio.Task[aiohttp.ClientResponse],
        *,
        client_key: str | None,
        secrets: tuple[str, ...],
        deadline: float,
        release: Callable[[aiohttp.ClientResponse], None],
    ) -> None:
        """``release`` takes a reply's response once it is read (back to the pool)."""
        self._config = config
        self._url = url
        self._auth = client_key
        self._deadline = deadline
        self._release = release
        self._request: asyncio.Task[aiohttp.ClientResponse] | None = request
        self.secrets = secrets

    @contextmanager
    def failures_mapped(self) -> Iterator[None]:
        """aiohttp's exceptions before the answer as the ``UpstreamError`` the client gets."""
        config = self._config
        url = self._url
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
            config = self._config
            try:
                raw, _ = await read_at_most(
                    response.content, ERROR_BODY_LIMIT, config.idle_timeout_s
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
        config = self._config
        return UpstreamReply(
            response,
            first_event_deadline=self._deadline,
            first_byte_timeout=config.first_byte_timeout_s,
            idle_timeout=config.idle_timeout_s,
            decoder=decoder_for(config.dialect, self.secrets, config.max_event_chars),
            secrets=self.secrets,
            release=self._release,
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
