"""Proxied requests: the handlers' side of the upstream source.

A chat completion for the upstream is forwarded as the client sent it (see
``dialects.openai_chat.parse_proxy_request``). A streaming reply is re-tokenized and
re-paced as it arrives (``engine.live.LiveReply``), through the same runner as every other
reply; a reply with ``stream: false`` is passed on as the upstream sent it.

The runner admits the request (the concurrency limit, shutdown) before anything is sent
upstream, so a refused request costs the upstream nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tokenstream.dialects.openai_chat import OpenAIChunkFormat, ProxyRequest
from tokenstream.dialects.overrides import resolve_profile
from tokenstream.dialects.stream_query import StreamRequest, encoder_for
from tokenstream.engine.clock import LoopClock
from tokenstream.engine.events import ReplyEncoder
from tokenstream.engine.live import LiveReply
from tokenstream.engine.pacer import PacingProfile
from tokenstream.errors import InvalidRequest
from tokenstream.server.state import AppState
from tokenstream.sources.upstream import UpstreamClient
from tokenstream.sse.transport import head_response

__all__ = ["chat_completions", "client_auth", "stream_query"]


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
        return await state.runner.whole(
            request, lambda: client.forward(body, auth), clock=LoopClock()
        )
    encoder = OpenAIChunkFormat(
        model=proxied.model,
        include_usage=proxied.include_usage,
        sentinel=config.server.sentinel,
    )
    return await _stream_live(request, state, encoder, client, body, auth, profile)


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
    encoder = encoder_for(query, model, config.server.sentinel)
    auth = client_auth(request, state)
    return await _stream_live(request, state, encoder, client, body, auth, profile)


async def _stream_live(
    request: web.Request,
    state: AppState,
    encoder: ReplyEncoder,
    client: UpstreamClient,
    body: dict[str, Any] | bytes,
    auth: str | None,
    profile: PacingProfile,
) -> web.StreamResponse:
    """The upstream's reply, re-paced, through the runner; heartbeats begin while the
    upstream takes its time to answer."""
    return await state.runner.stream(
        request,
        encoder,
        lambda: _live(state, client, body, auth, profile),
        answer_within=state.config.server.heartbeat_s,
    )


async def _live(
    state: AppState,
    client: UpstreamClient,
    body: dict[str, Any] | bytes,
    auth: str | None,
    profile: PacingProfile,
) -> LiveReply:
    """Ask the upstream; once it answers with a stream, the reply to play."""
    pending = await client.begin(body, auth)
    try:
        reply = await pending.reply()
    except BaseException:
        pending.close()
        raise
    return LiveReply(
        reply.items(),
        tokenizer=state.tokenizer,
        profile=profile,
        clock=state.clock,
        stats=state.stats,
        close=reply.close,
    )
