"""Proxied requests: the handlers' side of the upstream source.

Every client dialect (chat completions, Responses, Anthropic Messages, ``GET /v1/stream``)
can be answered by the upstream, whatever API it speaks (``upstream.dialect``):

- the same API as the client's (``forwarded``): the client's body goes upstream as it was
  sent (``dialects.openai_chat.parse_proxy_request``: the ``tokenstream`` object taken out,
  ``upstream.model`` put in), and a reply with ``stream: false`` is passed on as it came;
- another API (``translated``): a body built from the parsed request
  (``sources.upstream_bodies``), always streamed; a client that asked for a whole answer gets
  one built from the reply's events added up (each dialect's whole-body builder).

A streaming reply is decoded into reply events (the upstream's dialect), re-tokenized and
re-paced as it arrives (``engine.live.LiveReply``), through the same runner as every other
reply, and encoded by the client's dialect. The runner admits the request (the concurrency
limit, shutdown) before anything is sent upstream, so a refused request costs the upstream
nothing; a request is sent upstream once, never again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from tokenstream.dialects.catalog import PromptCounted
from tokenstream.dialects.openai_chat import ProxyRequest
from tokenstream.dialects.overrides import PacingOverrides, resolve_faults, resolve_profile
from tokenstream.dialects.stream_query import StreamRequest, encoder_for, prompt_counted
from tokenstream.engine.accounting import current_record
from tokenstream.engine.clock import LoopClock
from tokenstream.engine.events import ReplyContent, ReplyEncoder, ReplyEvent, Usage
from tokenstream.engine.faults import Fault
from tokenstream.engine.live import LiveReply
from tokenstream.engine.messages import ChatMessage, Conversation
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.reply import count_prompt_tokens
from tokenstream.engine.tokenizer import Tokenizer
from tokenstream.errors import InvalidRequest, UpstreamError, UpstreamStreamError
from tokenstream.server.auth import presented_key
from tokenstream.server.recording import Recording, forwarded_recording, recording
from tokenstream.server.state import AppState
from tokenstream.sources.upstream import UpstreamClient, UpstreamReply
from tokenstream.sources.upstream_bodies import upstream_body
from tokenstream.sse.transport import head_response

__all__ = [
    "WholeAnswer",
    "client_key",
    "forwarded",
    "stream_query",
    "translated",
]

WholeAnswer = Callable[[str, ReplyContent, Usage], dict[str, Any]]
"""A client dialect's whole answer: from the model's name, the reply and its usage."""

_COUNT_INLINE_CHARS = 16_384
"""Prompts longer than this are counted in a worker thread."""


@dataclass(frozen=True, slots=True)
class _Prompt:
    """Who is told the prompt's tokens, and the prompt to count when the upstream does not
    say (only Anthropic's says, ahead of the reply)."""

    shown: PromptCounted
    messages: Sequence[ChatMessage]


@dataclass(frozen=True, slots=True)
class _Ask:
    """One request for the upstream."""

    client: UpstreamClient
    body: dict[str, Any] | bytes
    key: str | None
    record: Recording | None = None
    """Set when the reply is to be stored as a fixture (``serve --record``)."""


def client_key(request: web.Request, state: AppState) -> str | None:
    """The client's own key (``Authorization: Bearer``, or ``x-api-key``), when the config
    forwards it."""
    if state.config.upstream.forward_client_auth:
        return presented_key(request)
    return None


def _pacing(
    request: web.Request, state: AppState, overrides: PacingOverrides, prefix: str
) -> tuple[PacingProfile, tuple[Fault, ...]]:
    """The proxied reply's pacing profile and the faults injected into it."""
    config = state.config
    profile = resolve_profile(
        config,
        overrides,
        header_profile=request.headers.get("X-Tokenstream-Profile"),
        prefix=prefix,
        default=config.upstream.profile,
    )
    return profile, resolve_faults(overrides, profile, request.headers, state.chaos)


async def forwarded(
    request: web.Request,
    state: AppState,
    client: UpstreamClient,
    proxied: ProxyRequest,
    encoder: ReplyEncoder,
    *,
    shown: PromptCounted | None = None,
) -> web.StreamResponse:
    """A request in the upstream's own dialect: the client's body, the upstream's answer."""
    key = client_key(request, state)
    body = proxied.body if proxied.raw is None else proxied.raw
    profile, faults = _pacing(request, state, proxied.overrides, "tokenstream.")
    if not proxied.stream:  # (passed on as it came: not recorded)
        return await state.runner.whole(
            request, partial(client.forward, body, key), clock=LoopClock(), faults=faults
        )
    prompt = None if shown is None else _Prompt(shown, ())
    ask = _Ask(client, body, key, forwarded_recording(request, state, body))
    return await _stream_live(request, state, encoder, ask, profile, prompt, faults=faults)


async def translated(
    request: web.Request,
    state: AppState,
    client: UpstreamClient,
    conversation: Conversation,
    *,
    overrides: PacingOverrides,
    stream: bool,
    encoder: ReplyEncoder,
    answer: WholeAnswer | None,
    shown: PromptCounted | None = None,
    headers: Mapping[str, str] | None = None,
    chat_id: str | None = None,
) -> web.StreamResponse:
    """A request in another dialect than the upstream's: its body built from
    ``conversation``; streamed in ``encoder``'s format (with the dialect's own ``headers``),
    or whole as ``answer`` makes it (a dialect that always streams has none). ``chat_id``:
    the AI SDK chat it answers (``GET /api/chat/{id}/stream`` resumes it)."""
    ask = _Ask(
        client,
        upstream_body(state.config.upstream.dialect, conversation),
        client_key(request, state),
        recording(request, conversation),
    )
    profile, faults = _pacing(request, state, overrides, "tokenstream.")
    if not stream and answer is not None:
        content = await state.runner.whole(
            request, partial(_read_whole, ask), clock=LoopClock(), faults=faults
        )
        usage = content.usage or await _counted_usage(state, conversation.messages, content)
        current_record().tokens = usage.completion_tokens
        model = content.model or conversation.model
        return web.json_response(answer(model, content, usage))
    prompt = None if shown is None else _Prompt(shown, conversation.messages)
    return await _stream_live(
        request, state, encoder, ask, profile, prompt, headers, faults=faults, chat_id=chat_id,
    )


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
    profile, faults = _pacing(request, state, query.overrides, "")
    conversation = Conversation(model, [ChatMessage("user", query.prompt)], query.max_tokens)
    body = upstream_body(
        config.upstream.dialect, conversation, include_usage=query.include_usage
    )
    if request.method == "HEAD":
        return head_response(dict(query.dialect.headers) if query.dialect is not None else None)
    encoder = encoder_for(query, model, config.server.sentinel)
    ask = _Ask(client, body, client_key(request, state), recording(request, conversation))
    counted = prompt_counted(encoder)
    prompt = None if counted is None else _Prompt(counted, conversation.messages)
    headers = dict(query.dialect.headers) if query.dialect is not None else None
    return await _stream_live(
        request, state, encoder, ask, profile, prompt, headers, faults=faults
    )


async def _stream_live(
    request: web.Request,
    state: AppState,
    encoder: ReplyEncoder,
    ask: _Ask,
    profile: PacingProfile,
    prompt: _Prompt | None,
    headers: Mapping[str, str] | None = None,
    *,
    faults: tuple[Fault, ...] = (),
    chat_id: str | None = None,
) -> web.StreamResponse:
    """The upstream's reply, re-paced, through the runner; heartbeats begin while the
    upstream takes its time to answer."""
    return await state.runner.stream(
        request,
        encoder,
        partial(_live, state, ask, profile, prompt),
        answer_within=state.config.server.heartbeat_s,
        headers=headers,
        faults=faults,
        resumable=state.config.resume.enabled_upstream,
        chat_id=chat_id,
    )


async def _live(
    state: AppState, ask: _Ask, profile: PacingProfile, prompt: _Prompt | None
) -> LiveReply:
    """Ask the upstream; once it answers with a stream, the reply to play."""
    sent_at = time.monotonic()  # what a recording's arrivals count from
    pending = await ask.client.begin(ask.body, ask.key)
    try:
        counted: int | None = None
        if prompt is not None and state.config.upstream.dialect != "anthropic":
            # the upstream will not say before the reply: counted while it thinks
            counted = await _prompt_tokens(state, prompt.messages)
        reply = await pending.reply()
    except BaseException:
        pending.close()
        raise
    items = reply.items()
    if ask.record is not None:
        items = ask.record.tap(items, sent_at)
    if prompt is not None:
        items = _telling(items, reply, prompt, counted, state.tokenizer)
    return LiveReply(
        items,
        tokenizer=state.tokenizer,
        profile=profile,
        clock=state.clock,
        stats=state.stats,
        close=reply.close,
    )


async def _telling(
    items: AsyncGenerator[ReplyEvent, None],
    reply: UpstreamReply,
    prompt: _Prompt,
    counted: int | None,
    tokenizer: Tokenizer,
) -> AsyncGenerator[ReplyEvent, None]:
    """``items``; before the first, the prompt's tokens told to the encoder: the upstream's
    count (Anthropic's ``message_start`` comes first), else tokenstream's."""
    try:
        first = True
        async for item in items:
            if first:
                first = False
                tokens = reply.prompt_tokens if counted is None else counted
                if tokens is None:
                    tokens = count_prompt_tokens(tokenizer, prompt.messages)
                prompt.shown.input_tokens = tokens
            yield item
    finally:
        await items.aclose()


async def _read_whole(ask: _Ask) -> ReplyContent:
    """The upstream's streamed reply read to its end and added up, for a whole answer."""
    sent_at = time.monotonic()  # what a recording's arrivals count from
    pending = await ask.client.begin(ask.body, ask.key)
    try:
        reply = await pending.reply()
    except BaseException:
        pending.close()
        raise
    content = ReplyContent()
    arriving = reply.items()
    if ask.record is not None:
        arriving = ask.record.tap(arriving, sent_at)
    try:
        async with aclosing(arriving) as items:
            async for item in items:
                content.add(item)
    except UpstreamStreamError as exc:
        raise UpstreamError(
            exc.message, status=502, error_type=exc.error_type, code=exc.code
        ) from None
    finally:
        reply.close()
    return content


async def _prompt_tokens(state: AppState, messages: Sequence[ChatMessage]) -> int:
    if sum(len(message.content) for message in messages) > _COUNT_INLINE_CHARS:
        # tiktoken releases the GIL: a long prompt is counted without stalling every stream
        return await asyncio.to_thread(count_prompt_tokens, state.tokenizer, messages)
    return count_prompt_tokens(state.tokenizer, messages)


async def _counted_usage(
    state: AppState, messages: Sequence[ChatMessage], content: ReplyContent
) -> Usage:
    """The usage of a reply whose upstream sent none: tokenstream's own count."""
    completion = state.tokenizer.count(content.text + content.reasoning) + sum(
        state.tokenizer.count(call.name + call.arguments) for call in content.tool_calls
    )
    return Usage(await _prompt_tokens(state, messages), completion)
