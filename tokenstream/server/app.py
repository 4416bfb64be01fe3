"""The aiohttp application: routes, error rendering, and one handler per endpoint.

Handlers only translate HTTP to pipeline values and back; the work is in the pipeline stages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CollectorRegistry

from tokenstream.config import Config
from tokenstream.dialects.parsing import (
    PacingOverrides,
    parse_chat_completion,
    parse_stream_query,
    resolve_profile,
)
from tokenstream.dialects.wire import WireFormat, make_format, new_completion_id
from tokenstream.engine.clock import TimerClock
from tokenstream.engine.lateness import LatenessHistogram
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.playout import Playout
from tokenstream.engine.reply import (
    ReplyProgress,
    count_prompt_tokens,
    scheduled_reply,
    whole_reply,
)
from tokenstream.engine.scheduler import BucketClock
from tokenstream.engine.streams import (
    SHUTTING_DOWN,
    STREAM_TIME_LIMIT,
    DeadlineClock,
    StreamRegistry,
    StreamStats,
    StreamTimeLimit,
    interruption_ending,
    tracked_stream,
)
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.errors import InvalidRequest, NotFound, RequestError, Unavailable, error_body
from tokenstream.server import proxy
from tokenstream.server.accesslog import ACCESS_LOGGER, access_log_middleware, current_record
from tokenstream.server.auth import KeyChecker, auth_middleware, load_api_keys
from tokenstream.server.cors import CorsPolicy, cors_preflight_middleware
from tokenstream.server.limits import check_prompt_tokens, check_query_encoding, reply_token_limit
from tokenstream.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tokenstream.server.metrics import metrics_registry, render
from tokenstream.server.ui import add_ui_routes
from tokenstream.sources.scripted import EchoSource, ScriptedSource, Source
from tokenstream.sources.upstream import UPSTREAM, UpstreamClient
from tokenstream.sse.transport import SSEResponse, head_response

__all__ = ["CONFIG", "METRICS", "STATE", "AppState", "StreamStats", "create_app"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AppState:
    config: Config
    tokenizer: Tokenizer
    sources: dict[str, Source]
    clock: TimerClock
    stats: StreamStats = field(default_factory=StreamStats)
    lateness: LatenessHistogram = field(default_factory=LatenessHistogram)
    streams: StreamRegistry = field(default_factory=lambda: StreamRegistry(None, 1))
    keys: KeyChecker = field(default_factory=lambda: KeyChecker(()))


CONFIG = web.AppKey("config", Config)
STATE = web.AppKey("state", AppState)
METRICS = web.AppKey("metrics", CollectorRegistry)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(error: RequestError) -> web.Response:
    response = web.json_response(error.to_dict(), status=error.status)
    response.headers.update(error.headers)
    return response


_HTTP_ERROR_TYPES = {404: "not_found_error", 405: "invalid_request_error"}


@web.middleware
async def _openai_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every error leaves as ``{"error": {message, type, param, code}}``; no traceback leaks."""
    try:
        response = await handler(request)
    except RequestError as error:
        return _json_error(error)
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[CONFIG].server.max_body_bytes
        return _json_error(
            RequestError(
                f"Request body too large: the limit is {limit} bytes (server.max_body_bytes).",
                status=exc.status,
                code="request_too_large",
            )
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return web.json_response(
            error_body("The server had an error while processing your request.", "server_error"),
            status=500,
        )
    if response.status >= 400 and not response.prepared and response.content_type != (
        "application/json"
    ):
        # a returned (not raised) error, such as the static file handler's 404
        return _http_error(request, response)
    return response


def _http_error(request: web.Request, exc: web.StreamResponse) -> web.Response:
    """An aiohttp HTTP error (raised or returned) in the OpenAI shape, same status."""
    message = {
        404: f"Unknown path {request.path!r}. See GET /v1/models, POST "
        "/v1/chat/completions, GET /v1/stream, GET /healthz.",
        405: f"Method {request.method} is not allowed on {request.path}.",
    }.get(exc.status, exc.reason)
    http_error = RequestError(
        message,
        status=exc.status,
        error_type=_HTTP_ERROR_TYPES.get(exc.status, "invalid_request_error"),
        code=exc.reason.lower().replace(" ", "_"),
    )
    response = _json_error(http_error)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


@web.middleware
def _valid_query(request: web.Request, handler: _Handler) -> Awaitable[web.StreamResponse]:
    # A plain function handing on the handler's awaitable: no frame of its own stays alive
    # (in memory) for the whole length of every stream.
    check_query_encoding(request.rel_url.raw_query_string)
    return handler(request)


def _deadline(state: AppState) -> float | None:
    limit = state.config.server.max_stream_duration_s
    return None if limit is None else state.clock.now() + limit


def _pick_source(state: AppState, overrides: PacingOverrides) -> Source:
    name = overrides.source or state.config.default_source
    if name not in state.sources:
        raise InvalidRequest(
            f"The source '{name}' is not available here"
            + (": set upstream.base_url to use it." if name == "upstream" else "."),
            param="source",
            code="invalid_value",
        )
    return state.sources[name]


def _upstream_for(
    request: web.Request, state: AppState, source: str | None
) -> UpstreamClient | None:
    """The upstream client when this request is to be proxied, else None."""
    if (source or state.config.default_source) != "upstream":
        return None
    client = request.app.get(UPSTREAM)
    if client is None:
        raise InvalidRequest(
            "The source 'upstream' is not available here: set upstream.base_url to use it.",
            param="source",
            code="invalid_value",
        )
    return client


def _check_model(config: Config, model: str, param: str = "model") -> None:
    if config.strict_models and model not in config.models:
        raise NotFound(
            f"The model '{model}' does not exist. Available models: {', '.join(config.models)}.",
            param=param,
            code="model_not_found",
        )


async def _stream_reply(
    request: web.Request,
    *,
    wire: WireFormat,
    source: Source,
    messages: list[ChatMessage],
    profile: PacingProfile,
    max_tokens: int | None,
    prompt_param: str = "messages",
) -> web.StreamResponse:
    state = request.app[STATE]
    server = state.config.server
    stats = state.stats
    record = current_record()
    record.stream = True
    control = state.streams.open()  # the cheap refusal (429) comes before any tokenizing
    try:
        progress = ReplyProgress(prompt_tokens=count_prompt_tokens(state.tokenizer, messages))
        check_prompt_tokens(server, progress.prompt_tokens, prompt_param)
        max_tokens = reply_token_limit(server, max_tokens, "max_tokens")
    except BaseException:
        state.streams.close(control)
        raise
    sse = SSEResponse(
        request,
        state.clock,
        send_timeout=server.send_timeout_s,
        max_buffered=server.max_buffered_bytes,
    )
    limit = _deadline(state)
    try:
        async with tracked_stream(
            stats, sse, wire, record, path=request.path, send_timeout=server.send_timeout_s
        ):
            await sse.prepare(hold_headers=True)  # sent with the first event, or at once
            record.status = sse.response.status
            text = await whole_reply(source, messages)
            playout = Playout(
                sse,
                state.clock,
                scheduled_reply(
                    text,
                    tokenizer=state.tokenizer,
                    profile=profile,
                    start=state.clock.now(),
                    max_tokens=max_tokens,
                    progress=progress,
                ),
                wire,
                stats,
                heartbeat=server.heartbeat_s,
                limit=limit,
                lateness=state.lateness if profile.tokens_per_second is not None else None,
            )
            try:
                with control.interruptible():
                    await playout.run()
                ending = wire.finish(progress.finish_reason, progress.usage)
                record.outcome = "completed"
            except (StreamTimeLimit, asyncio.CancelledError) as interruption:
                cut_short = interruption_ending(
                    interruption, control, wire, record, server.max_stream_duration_s
                )
                if cut_short is None:
                    raise  # the client left
                ending = cut_short
            finally:
                record.tokens = playout.tokens
            await sse.close(ending)
    finally:
        state.streams.close(control)
    return sse.response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    config = state.config
    raw = await request.read()
    if config.upstream.base_url is not None:
        proxied = proxy.parse_proxy_request(raw, config.upstream.model)
        client = _upstream_for(request, state, proxied.overrides.source)
        if client is not None:
            return await proxy.chat_completions(request, state, client, proxied)
    parsed = parse_chat_completion(raw)
    _check_model(config, parsed.model)
    profile = resolve_profile(
        config,
        parsed.overrides,
        header_profile=request.headers.get("X-Tokenstream-Profile"),
        prefix="tokenstream.",
    )
    source = _pick_source(state, parsed.overrides)
    if parsed.stream:
        wire = make_format(
            "openai",
            model=parsed.model,
            include_usage=parsed.include_usage,
            sentinel=config.server.sentinel,
        )
        return await _stream_reply(
            request,
            wire=wire,
            source=source,
            messages=parsed.messages,
            profile=profile,
            max_tokens=parsed.max_tokens,
        )
    return await _complete(request, parsed.model, source, parsed.messages, profile,
                           parsed.max_tokens)


async def _complete(
    request: web.Request,
    model: str,
    source: Source,
    messages: list[ChatMessage],
    profile: PacingProfile,
    max_tokens: int | None,
) -> web.Response:
    """``stream: false``: the whole reply, returned when the paced reply would have ended."""
    state = request.app[STATE]
    server = state.config.server
    control = state.streams.open()
    try:
        progress = ReplyProgress(prompt_tokens=count_prompt_tokens(state.tokenizer, messages))
        check_prompt_tokens(server, progress.prompt_tokens, "messages")
        max_tokens = reply_token_limit(server, max_tokens, "max_tokens")
        events = list(
            scheduled_reply(
                await whole_reply(source, messages),
                tokenizer=state.tokenizer,
                profile=profile,
                start=state.clock.now(),
                max_tokens=max_tokens,
                progress=progress,
            )
        )
        texts = [piece.text for _, piece in events]
        if events:  # the reply is returned when its last event would have been sent
            with control.interruptible():
                await DeadlineClock(state.clock, _deadline(state)).sleep_until(events[-1][0])
    except StreamTimeLimit:
        raise InvalidRequest(
            STREAM_TIME_LIMIT.format(limit=server.max_stream_duration_s or 0.0),
            code="stream_duration_exceeded",
        ) from None
    except asyncio.CancelledError:
        if not control.consume_stop():
            raise
        raise Unavailable(SHUTTING_DOWN, code="server_shutting_down") from None
    finally:
        state.streams.close(control)
    current_record().tokens = progress.completion_tokens
    return web.json_response(
        {
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_tokenstream",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(texts), "refusal": None},
                    "logprobs": None,
                    "finish_reason": progress.finish_reason,
                }
            ],
            "usage": progress.usage.to_dict(),
        }
    )


async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /v1/stream``: the EventSource and curl endpoint."""
    state = request.app[STATE]
    config = state.config
    if request.headers.get("Last-Event-ID") == "done":
        # An EventSource reconnects when a finished stream closes; 204 tells it to stop.
        return web.Response(status=204)
    query = parse_stream_query(request.query, [key for key, _ in request.query.items()])
    client = _upstream_for(request, state, query.overrides.source)
    if client is not None:
        return await proxy.stream_query(request, state, client, query)
    model = query.model or config.models[0]
    _check_model(config, model)
    profile = resolve_profile(
        config, query.overrides, header_profile=request.headers.get("X-Tokenstream-Profile")
    )
    wire = make_format(
        query.format,
        model=model,
        include_usage=query.include_usage,
        event=query.event,
        with_ids=True,
        sentinel=config.server.sentinel,
    )
    source = _pick_source(state, query.overrides)
    if request.method == "HEAD":
        return head_response()
    messages = [ChatMessage("user", query.prompt)]
    max_tokens = query.max_tokens
    del query  # an open stream keeps only what it uses (memory per idle stream)
    return await _stream_reply(
        request,
        wire=wire,
        source=source,
        messages=messages,
        profile=profile,
        max_tokens=max_tokens,
        prompt_param="prompt",
    )


async def models(request: web.Request) -> web.Response:
    client = request.app.get(UPSTREAM)
    if client is not None:  # the models that can answer are the upstream's
        return await client.get("/models", proxy.client_auth(request, request.app[STATE]))
    created = 1_700_000_000
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "tokenstream"}
                for name in request.app[CONFIG].models
            ],
        }
    )


async def model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    client = request.app.get(UPSTREAM)
    if client is not None:
        return await client.get(
            "/models/" + quote(name, safe=""), proxy.client_auth(request, request.app[STATE])
        )
    if name not in request.app[CONFIG].models:
        raise NotFound(f"The model '{name}' does not exist.", param="model",
                       code="model_not_found")
    return web.json_response(
        {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "tokenstream"}
    )


async def profiles(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    return web.json_response(
        {
            "default": config.default_profile,
            "profiles": {
                name: profile.model_dump(mode="json") for name, profile in config.profiles.items()
            },
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format (pacing lateness, stream counters, process)."""
    return web.Response(
        body=render(request.app[METRICS]), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )


async def healthz(request: web.Request) -> web.Response:
    stats = request.app[STATE].stats
    return web.json_response(
        {
            "status": "ok",
            "active_streams": stats.active,
            "streams_started": stats.started,
            "streams_completed": stats.completed,
            "client_disconnects": stats.disconnected,
            "stream_errors": stats.failed,
            "client_stalls": stats.stalled,
        }
    )


def create_app(
    config: Config | None = None,
    *,
    clock: TimerClock | None = None,
    environ: Mapping[str, str] | None = None,
) -> web.Application:
    """Build the application. Loading the tokenizer is the slow part (about a second, once).

    ``environ`` (default ``os.environ``) is where ``TOKENSTREAM_API_KEYS`` is read.
    """
    config = config if config is not None else Config()
    server = config.server
    clock = clock or BucketClock()
    keys = KeyChecker(load_api_keys(config, os.environ if environ is None else environ))
    cors = CorsPolicy(server.cors_origins)
    access_level = (
        None if server.access_log_level == "OFF" else logging.getLevelName(server.access_log_level)
    )
    middlewares = [
        access_log_middleware(logging.getLogger(ACCESS_LOGGER), access_level, clock.now),
        _openai_errors,
        cors_preflight_middleware(cors),
    ]
    if keys:
        middlewares.append(auth_middleware(keys, server.open_paths))
    middlewares.append(_valid_query)
    app = web.Application(
        middlewares=middlewares,
        client_max_size=server.max_body_bytes,
        handler_args={
            # a client that leaves cancels its handler at once, however the app is run
            "handler_cancellation": True,
            # tokenstream.access replaces aiohttp's access log, whose request line has the
            # query string (prompts) in it
            "access_log": None,
        },
    )
    sources: dict[str, Source] = {
        "scripted": ScriptedSource(config.reply_rules(), config.responses.default_reply),
        "echo": EchoSource(),
    }
    app[CONFIG] = config
    app[STATE] = AppState(
        config=config,
        tokenizer=Tokenizer(load_encoding(config.tokenizer.encoding)),
        sources=sources,
        clock=clock,
        streams=StreamRegistry(server.max_concurrent_streams, server.retry_after_s),
        keys=keys,
    )
    if config.upstream.base_url is not None:
        upstream = UpstreamClient.from_environment(config.upstream, os.environ)
        app[UPSTREAM] = upstream
        app.cleanup_ctx.append(upstream.cleanup_ctx)
    app[METRICS] = metrics_registry(app[STATE].stats, app[STATE].lateness)
    app.on_response_prepare.append(cors.on_response_prepare)
    app.on_shutdown.append(_end_streams)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/stream", stream)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model}", model)
    app.router.add_get("/v1/profiles", profiles)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_ui_routes(app)  # the demo page: GET / and GET /static/{name}
    return app


async def _end_streams(app: web.Application) -> None:
    """On shutdown: let streams finish for ``shutdown_grace_s``, then end the rest."""
    state = app[STATE]
    server = state.config.server
    running = len(state.streams)
    if running:
        log.info("shutting down: %d streams running, %g s to finish", running,
                 server.shutdown_grace_s)
    stopped = await state.streams.shutdown(server.shutdown_grace_s, server.send_timeout_s + 1)
    if stopped:
        log.warning("shutting down: ended %d streams still running after %g s", stopped,
                    server.shutdown_grace_s)
