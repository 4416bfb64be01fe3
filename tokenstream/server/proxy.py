"""Proxied requests: the handlers' side of the upstream source.

A chat completion for the upstream is forwarded as the client sent it, fields the
upstream understands (temperature, tools, max_tokens, ...) unchanged, with only these
changes: the ``tokenstream`` object (pacing options) is taken out, ``stream`` is kept as
the client asked, and ``upstream.model``, when configured, replaces ``model``.

A streaming reply is re-tokenized and re-paced by the live stage; a reply with
``stream: false`` is passed on as the upstream sent it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from tokenstream.dialects.parsing import (
    NO_OVERRIDES,
    PacingOverrides,
    StreamRequest,
    resolve_profile,
)
from tokenstream.dialects.wire import WireFormat, make_format
from tokenstream.engine.events import Passthrough
from tokenstream.engine.live import pace_live
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.streams import (
    DeadlineClock,
    StreamTimeLimit,
    interruption_ending,
    tracked_stream,
)
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import InvalidRequest
from tokenstream.server.accesslog import current_record
from tokenstream.sources.upstream import PendingAnswer, UpstreamClient
from tokenstream.sse.transport import PING, ClientGone, SSEResponse, head_response

if TYPE_CHECKING:
    from tokenstream.server.app import AppState

__all__ = [
    "ProxyRequest",
    "chat_completions",
    "client_auth",
    "parse_proxy_request",
    "stream_query",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    body: dict[str, Any]
    """What goes upstream."""
    model: str
    stream: bool
    include_usage: bool
    overrides: PacingOverrides
    raw: bytes | None = None
    """The client's own bytes, when ``body`` is them unchanged: sent as they came, so a long
    conversation is not encoded again on the way to the first token."""


def _overrides(value: Any) -> PacingOverrides:
    if value is None:
        return NO_OVERRIDES
    try:
        return PacingOverrides.model_validate(value or {})
    except ValidationError as exc:
        item = exc.errors(include_url=False)[0]
        param = "tokenstream." + ".".join(str(part) for part in item["loc"])
        raise InvalidRequest(
            f"Invalid value for '{param}': {item['msg']}.", param=param, code="invalid_value"
        ) from None


def parse_proxy_request(raw: bytes, model_override: str | None) -> ProxyRequest:
    """Check only what tokenstream itself needs; the upstream judges the rest."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    # The client's bytes go upstream unchanged unless something in them is replaced. Not
    # with upstream.model: with a key given twice, another parser could take the other one.
    unchanged = (
        model_override is None
        and "tokenstream" not in body
        and raw.lstrip(b" \t\r\n")[:1] == b"{"  # UTF-8 without a byte order mark
    )
    overrides = _overrides(body.pop("tokenstream", None))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest(
            "Invalid value for 'stream': must be a boolean.", param="stream", code="invalid_value"
        )
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    if stream and body.get("n") not in (None, 1):
        raise InvalidRequest(
            "tokenstream re-paces one choice per reply: 'n' must be 1 when streaming.",
            param="n",
            code="invalid_value",
        )
    if model_override is not None:
        body["model"] = model_override
    model = body.get("model")
    return ProxyRequest(
        body=body,
        model=model if isinstance(model, str) else "",
        stream=bool(stream),
        include_usage=include_usage,
        overrides=overrides,
        raw=raw if unchanged else None,
    )


def client_auth(request: web.Request, state: AppState) -> str | None:
    """The client's Authorization header, when the config forwards it."""
    if state.config.upstream.forward_client_auth:
        return request.headers.get("Authorization")
    return None


async def chat_completions(
    request: web.Request, state: AppState, client: UpstreamClient, proxied: ProxyRequest
) -> web.StreamResponse:
    """``POST /v1/chat/completions`` answered by the upstream."""
    config = state.config
    profile = resolve_profile(
        config,
        proxied.overrides,
        header_profile=request.headers.get("X-Tokenstream-Profile"),
        prefix="tokenstream.",
        default=config.upstream.profile,
    )
    auth = client_auth(request, state)
    body = proxied.body if proxied.raw is None else proxied.raw
    if not proxied.stream:
        return await client.forward(body, auth)
    pending = await client.begin(body, auth)  # from here on, stream_live closes it
    # made while the upstream prepares its answer (it cannot fail)
    wire = make_format(
        "openai",
        model=proxied.model,
        include_usage=proxied.include_usage,
        sentinel=config.server.sentinel,
    )
    return await stream_live(request, state, pending=pending, wire=wire, profile=profile)


async def stream_query(
    request: web.Request, state: AppState, client: UpstreamClient, query: StreamRequest
) -> web.StreamResponse:
    """``GET /v1/stream`` answered by the upstream: the prompt as one user message."""
    config = state.config
    model = config.upstream.model or query.model
    if model is None:
        raise InvalidRequest(
            "Name the upstream model with the 'model' parameter, or set upstream.model in the "
            "config.",
            param="model",
            code="missing_required_parameter",
        )
    profile = resolve_profile(
        config,
        query.overrides,
        header_profile=request.headers.get("X-Tokenstream-Profile"),
        default=config.upstream.profile,
    )
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": query.prompt}],
        "stream": True,
    }
    if query.max_tokens is not None:
        body["max_tokens"] = query.max_tokens
    if query.include_usage:
        body["stream_options"] = {"include_usage": True}
    if request.method == "HEAD":
        return head_response()
    pending = await client.begin(body, client_auth(request, state))
    wire = make_format(
        query.format,
        model=model,
        include_usage=query.include_usage,
        event=query.event,
        with_ids=True,
        sentinel=config.server.sentinel,
    )
    return await stream_live(request, state, pending=pending, wire=wire, profile=profile)


class _KeepAlive:
    """A comment line whenever nothing was written for about ``interval`` seconds.

    It covers the waits for the upstream as well as the pacer's, so it runs beside them, on
    the loop's clock: heartbeats are about real network silence, not the pacing schedule.
    A loop timer looks every ``interval / 2``; a task exists only while a ping is written,
    so starting a stream does not wait for one to be created and scheduled.
    """

    __slots__ = ("_half", "_loop", "_ping", "_sse", "_timer", "_written")

    def __init__(self, sse: SSEResponse, interval: float) -> None:
        self._sse = sse
        self._half = interval / 2
        self._loop = asyncio.get_running_loop()
        self._written = -1
        self._ping: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(self._half, self._look)

    def _look(self) -> None:
        self._timer = None
        if self._sse.bytes_sent == self._written:
            self._ping = self._loop.create_task(self._send_ping())
            return  # the ping re-arms the timer once written
        self._written = self._sse.bytes_sent
        self._timer = self._loop.call_later(self._half, self._look)

    async def _send_ping(self) -> None:
        try:
            await self._sse.send(PING)
        except ClientGone:
            return
        finally:
            self._ping = None
        self._written = self._sse.bytes_sent
        self._timer = self._loop.call_later(self._half, self._look)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ping = self._ping
        if ping is not None:
            ping.cancel()
            await asyncio.wait([ping])


async def stream_live(
    request: web.Request,
    state: AppState,
    *,
    pending: PendingAnswer,
    wire: WireFormat,
    profile: PacingProfile,
) -> web.StreamResponse:
    """Stream a proxied reply once it comes; the request is closed however this ends."""
    stats = state.stats
    server = state.config.server
    try:
        sse = SSEResponse(
            request, state.clock, send_timeout=server.send_timeout_s,
            max_buffered=server.max_buffered_bytes,
        )
        reply = await pending.reply()
    except BaseException:
        pending.close()
        raise
    try:
        control = state.streams.open()  # 429 beyond server.max_concurrent_streams
    except BaseException:
        reply.close()
        raise
    record = current_record()
    record.stream = True
    heartbeat = server.heartbeat_s
    keep_alive: _KeepAlive | None = None
    tokens = 0
    try:
        async with tracked_stream(
            stats, sse, wire, record, path=request.path, send_timeout=server.send_timeout_s
        ):
            await sse.prepare()
            record.status = sse.response.status
            if heartbeat is not None:
                keep_alive = _KeepAlive(sse, heartbeat)
            deadline = None if server.max_stream_duration_s is None else (
                state.clock.now() + server.max_stream_duration_s
            )
            events = pace_live(
                reply.items(), state.tokenizer, profile, DeadlineClock(state.clock, deadline)
            )
            try:
                with control.interruptible():
                    async for event in events:
                        if isinstance(event, Piece):
                            await sse.send(wire.piece(event))
                            stats.events_sent += 1
                            tokens += event.tokens
                            record.tokens = tokens
                        elif isinstance(event, Passthrough):
                            data = wire.passthrough(event)
                            if data:
                                await sse.send(data)
                                stats.events_sent += 1
                ending = wire.done()
                record.outcome = "completed"
            except (StreamTimeLimit, asyncio.CancelledError) as interruption:
                cut_short = interruption_ending(
                    interruption, control, wire, record, server.max_stream_duration_s
                )
                if cut_short is None:
                    raise  # the client left
                ending = cut_short
            finally:
                await events.aclose()
            await sse.close(ending)
    finally:
        state.streams.close(control)
        reply.close()
        if keep_alive is not None:
            await keep_alive.aclose()
    return sse.response
