"""The aiohttp application: its middleware, its routes and what lives as long as it does.

Requests enter through the middleware (access log, errors in the OpenAI shape, CORS,
auth, the query check), reach a handler in ``routes`` (or ``proxy`` for the upstream), which
parses them with a dialect and hands the reply to the app's one ``engine.runner.Runner``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from aiohttp import web

from tokenstream.config import Config, load_config
from tokenstream.engine.accounting import StreamStats
from tokenstream.engine.clock import TimerClock
from tokenstream.engine.lateness import LatenessHistogram
from tokenstream.engine.registry import StreamRegistry
from tokenstream.engine.runner import ResumeSettings, Runner, StreamLimits
from tokenstream.engine.scheduler import BucketClock
from tokenstream.engine.streamlog import MemoryStreamLogs, StreamLogStore
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.server import info_routes, resume_routes, routes
from tokenstream.server.accesslog import (
    ACCESS_LOGGER,
    access_log_middleware,
    log_client_errors_at_info,
)
from tokenstream.server.auth import (
    KeyChecker,
    auth_middleware,
    client_identity,
    load_api_keys,
)
from tokenstream.server.control import add_control_routes
from tokenstream.server.cors import CorsPolicy, cors_preflight_middleware
from tokenstream.server.journal import Journal
from tokenstream.server.metrics import metrics_export
from tokenstream.server.middleware import openai_errors, valid_query
from tokenstream.server.redis_journal import RedisJournal
from tokenstream.server.redis_limit import RedisLimit
from tokenstream.server.redis_logs import RedisStreamLogs
from tokenstream.server.redis_store import RedisStore
from tokenstream.server.replay import add_record_replay
from tokenstream.server.state import CONFIG, METRICS, STATE, AppState
from tokenstream.server.ui import add_ui_routes
from tokenstream.sources.scripted import EchoSource, ScriptedSource, ScriptSource
from tokenstream.sources.upstream import UPSTREAM, UpstreamClient

__all__ = ["CONFIG", "CONFIG_ENV", "METRICS", "STATE", "AppState", "create_app", "gunicorn_app"]

log = logging.getLogger(__name__)

CONFIG_ENV = "TOKENSTREAM_CONFIG"
"""The YAML config ``gunicorn_app`` loads (default: the embedded one)."""


def create_app(
    config: Config | None = None,
    *,
    clock: TimerClock | None = None,
    environ: Mapping[str, str] | None = None,
    worker_index: int | None = 0,
) -> web.Application:
    """Build the application. Loading the tokenizer is the slow part (about a second, once).

    ``environ`` (default ``os.environ``) is where ``TOKENSTREAM_API_KEYS`` is read.
    ``worker_index``: which worker of ``serve --workers N`` this is, for ``/healthz``.
    """
    config = config if config is not None else Config()
    server = config.server
    clock = clock or BucketClock()
    keys = KeyChecker(load_api_keys(config, os.environ if environ is None else environ))
    cors = CorsPolicy(server.cors_origins)
    access_level = (
        None if server.access_log_level == "OFF" else logging.getLevelName(server.access_log_level)
    )
    control = config.control
    journal = Journal(control.max_journal_entries if control.enabled else 0,
                      control.max_journal_body_bytes)
    middlewares = [
        access_log_middleware(
            logging.getLogger(ACCESS_LOGGER), access_level, clock.now,
            on_end=journal.record if journal else None,
        ),
        openai_errors,
        cors_preflight_middleware(cors),
    ]
    if keys:
        middlewares.append(auth_middleware(keys, server.open_paths))
    middlewares.append(valid_query)
    app = web.Application(
        middlewares=middlewares,
        client_max_size=server.max_body_bytes,
        handler_args={
            # a client that leaves cancels its handler at once, however the app is run
            "handler_cancellation": True,
            # tokenstream.access replaces aiohttp's access log, whose request line has the
            # query string (prompts) in it
            "access_log": None,
            "keepalive_timeout": server.keepalive_timeout_s,
        },
    )
    responses = config.responses
    scripted = ScriptedSource(
        config.reply_rules(),
        responses.default_reply,
        strict=responses.strict,
        max_runtime_rules=control.max_runtime_rules,
        max_sequences=responses.max_sequences,
    )
    sources: dict[str, ScriptSource] = {"scripted": scripted, "echo": EchoSource()}
    stats = StreamStats()
    resume = config.resume
    streams = StreamRegistry(
        server.max_concurrent_streams, server.retry_after_s, server.max_streams_per_client
    )
    logs: StreamLogStore = MemoryStreamLogs(
        clock, ttl_s=resume.ttl_s, max_streams=resume.max_streams,
        max_events_per_stream=resume.max_events_per_stream,
        max_bytes_per_stream=resume.max_bytes_per_stream, max_bytes=resume.max_bytes,
    )
    shared: tuple[RedisStore, RedisStreamLogs] | None = None
    if config.store != "memory":
        shared = _shared_through_redis(config, stats, clock, logs, streams, journal)
        logs = shared[1]
    app[CONFIG] = config
    app[STATE] = AppState(
        config=config,
        tokenizer=Tokenizer(load_encoding(config.tokenizer.encoding)),
        sources=sources,
        clock=clock,
        stats=stats,
        lateness=LatenessHistogram(),
        streams=streams,
        runner=Runner(
            clock,
            streams,
            stats,
            StreamLimits(
                heartbeat_s=server.heartbeat_s,
                max_stream_duration_s=server.max_stream_duration_s,
                send_timeout_s=server.send_timeout_s,
                max_buffered_bytes=server.max_buffered_bytes,
            ),
            client_of=client_identity(keys),
            logs=logs,
            resume=ResumeSettings(linger_s=resume.linger_s),
        ),
        keys=keys,
        scripted=scripted,
        journal=journal,
        worker_index=worker_index,
    )
    if shared is not None:
        store, redis_logs = shared
        app.cleanup_ctx.append(store.cleanup_ctx)  # (Redis answers, or the server stops)
        app.cleanup_ctx.append(redis_logs.cleanup_ctx)
    if config.upstream.base_url is not None:
        upstream = UpstreamClient.from_environment(config.upstream, os.environ)
        app[UPSTREAM] = upstream
        app.cleanup_ctx.append(upstream.cleanup_ctx)
    add_record_replay(app, config)  # the fixtures are read (and checked) now
    app[METRICS] = metrics_export(app[STATE].stats, app[STATE].lateness)
    app.cleanup_ctx.append(app[METRICS].cleanup_ctx)
    log_client_errors_at_info()
    app.on_response_prepare.append(cors.on_response_prepare)
    app.on_shutdown.append(_end_streams)
    app.router.add_post("/v1/chat/completions", routes.chat_completions)
    app.router.add_post("/v1/messages", routes.messages)
    app.router.add_post("/v1/responses", routes.responses)
    app.router.add_get("/v1/stream", routes.stream)
    app.router.add_get("/v1/streams/{stream_id}", resume_routes.resumed_stream)
    app.router.add_post(server.ai_sdk_chat_path, routes.ai_sdk_chat)
    app.router.add_get(
        server.ai_sdk_chat_path.rstrip("/") + "/{chat_id}/stream", resume_routes.ai_sdk_resume
    )
    app.router.add_get("/v1/dialects", info_routes.dialects)
    app.router.add_get("/v1/models", info_routes.models)
    app.router.add_get("/v1/models/{model}", info_routes.model)
    app.router.add_get("/v1/profiles", info_routes.profiles)
    app.router.add_get("/healthz", info_routes.healthz)
    app.router.add_get("/metrics", info_routes.metrics)
    add_ui_routes(app)  # the demo page: GET / and GET /static/{name}
    if control.enabled:
        add_control_routes(app)  # /_tokenstream/: the journal, run-time rules
    return app


def _shared_through_redis(
    config: Config, stats: StreamStats, clock: TimerClock, logs: StreamLogStore,
    streams: StreamRegistry, journal: Journal,
) -> tuple[RedisStore, RedisStreamLogs]:
    """``store: redis://``: the stream logs, the concurrency limit and the journal shared by
    every process using that Redis (docs/RELIABILITY.md)."""
    assert isinstance(logs, MemoryStreamLogs)
    store = RedisStore(config.store, config.store_prefix, stats)
    streams.shared = RedisLimit(store)
    if journal:
        journal.shared = RedisJournal(store, journal.max_entries)
    return store, RedisStreamLogs(logs, store, clock, heartbeat_s=config.server.heartbeat_s)


def gunicorn_app() -> web.Application:
    """The app for gunicorn's aiohttp worker, configured by ``$TOKENSTREAM_CONFIG``::

        gunicorn 'tokenstream.server.app:gunicorn_app()' -k aiohttp.GunicornWebWorker -w 2 \\
            -c python:tokenstream.server.gunicorn_conf

    gunicorn binds the address (``-b``; ``server.host`` and ``server.port`` are not used) and
    gives each worker ``--graceful-timeout`` to stop; ``tokenstream.server.gunicorn_conf``
    sets up the metrics of many workers (docs/RELIABILITY.md).
    """
    return create_app(load_config(os.environ.get(CONFIG_ENV) or None), worker_index=None)


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
