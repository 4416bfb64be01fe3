"""The handlers that describe the server rather than stream a reply: its dialects, models and
profiles, ``/metrics`` and ``/healthz``."""

from __future__ import annotations

import os
from urllib.parse import quote

from aiohttp import web

from tokenstream.dialects.catalog import AI_SDK_UI, DIALECTS
from tokenstream.errors import NotFound
from tokenstream.server import proxy
from tokenstream.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tokenstream.server.metrics import render
from tokenstream.server.state import CONFIG, METRICS, STATE
from tokenstream.sources.upstream import UPSTREAM

__all__ = ["dialects", "healthz", "metrics", "model", "models", "profiles"]


async def dialects(request: web.Request) -> web.Response:
    """``GET /v1/dialects``: the dialects a reply can be streamed in (``?dialect=`` on
    ``/v1/stream``) and the endpoint of each (the demo page's selector)."""
    ai_sdk_path = request.app[CONFIG].server.ai_sdk_chat_path
    return web.json_response({"object": "list", "data": [
        dialect.describe(ai_sdk_path if dialect.name == AI_SDK_UI else None)
        for dialect in DIALECTS.values()
    ]})


async def models(request: web.Request) -> web.Response:
    client = request.app.get(UPSTREAM)
    if client is not None:  # the models that can answer are the upstream's
        return await client.get("/models", proxy.client_key(request, request.app[STATE]))
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
            "/models/" + quote(name, safe=""), proxy.client_key(request, request.app[STATE])
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
    """``GET /metrics``: Prometheus text format (pacing lateness, stream counters, process);
    with many workers, every worker's added up."""
    return web.Response(
        body=render(request.app[METRICS]), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    stats = state.stats
    return web.json_response(
        {
            "status": "ok",
            # with many workers on one port, which one answered (its numbers below are its own)
            "worker": {"pid": os.getpid(), "index": state.worker_index},
            "active_streams": stats.active,
            "streams_started": stats.started,
            "streams_completed": stats.completed,
            "client_disconnects": stats.disconnected,
            "stream_errors": stats.failed,
            "client_stalls": stats.stalled,
        }
    )
