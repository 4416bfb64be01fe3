"""A streamed answer whose status was 200, read as it arrives (``UpstreamReply``).

Its time limits (the first event by the request's first-byte deadline, then at most the idle
timeout between reads) run on the event loop's clock: they are about the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

import aiohttp

from tokenstream.engine.events import ReplyEvent
from tokenstream.errors import UpstreamStreamError
from tokenstream.sources.event_stream import StreamDecoder
from tokenstream.sources.secrets import redact

__all__ = ["UpstreamReply"]


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
        decoder: StreamDecoder,
        secrets: tuple[str, ...],
        release: Callable[[aiohttp.ClientResponse], None],
    ) -> None:
        self._response: aiohttp.ClientResponse | None = response
        self._first_event_deadline = first_event_deadline
        self._first_byte_timeout = first_byte_timeout
        self._idle_timeout = idle_timeout
        self._decoder = decoder
        self._secrets = secrets
        self._release = release

    async def items(self) -> AsyncGenerator[ReplyEvent, None]:
        """The reply as it arrives; raises ``UpstreamStreamError`` when it fails or stalls."""
        response = self._response
        if response is None:
            raise RuntimeError("the reply was read or closed already")
        decoder = self._decoder
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

    @property
    def prompt_tokens(self) -> int | None:
        """The prompt's tokens, once the upstream said so ahead of the reply (Anthropic's
        ``message_start``)."""
        return self._decoder.prompt_tokens

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
