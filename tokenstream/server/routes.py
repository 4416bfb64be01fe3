"""The handlers: each parses its request with its dialect, picks the source, and hands the
reply to the runner. A request for the upstream goes to ``proxy``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web

from tokenstream.dialects.ai_sdk_ui import (
    UI_MESSAGE_STREAM_HEADERS,
    UIMessageStreamFormat,
    parse_ui_chat,
)
from tokenstream.dialects.anthropic_messages import (
    AnthropicMessagesFormat,
    message_body,
    parse_messages,
)
from tokenstream.dialects.catalog import AI_SDK_UI
from tokenstream.dialects.openai_chat import (
    OpenAIChunkFormat,
    completion_body,
    parse_chat_completion,
)
from tokenstream.dialects.openai_responses import (
    ResponsesFormat,
    parse_responses,
    response_body,
)
from tokenstream.dialects.overrides import resolve_faults, resolve_profile
from tokenstream.dialects.stream_query import encoder_for, parse_stream_query, prompt_counted
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.reply import ScheduledReply
from tokenstream.engine.starting import SHUTTING_DOWN
from tokenstream.errors import RequestError, Unavailable
from tokenstream.server import proxy, replay
from tokenstream.server.reply_sources import (
    answered_whole,
    check_model,
    pick_source,
    same_dialect_upstream,
    scheduled_reply,
    scripted_answer,
    scripted_start,
    upstream_conversation,
    upstream_for,
    with_prompt_tokens,
)
from tokenstream.server.resume_routes import reconnected
from tokenstream.server.state import STATE, AppState
from tokenstream.sources.matching import ScriptRequest
from tokenstream.sse.transport import head_response

__all__ = ["ai_sdk_chat", "chat_completions", "messages", "responses", "stream"]

log = logging.getLogger(__name__)


async def _read_body(request: web.Request, state: AppState) -> bytes:
    """The whole body, if it arrives within ``server.body_timeout_s`` (a client that trickles
    it in does not hold a connection for ever) and before shutdown (503)."""
    timeout_s = state.config.server.body_timeout_s
    control = state.streams.open_upload()
    try:
        with control.interruptible():
            async with asyncio.timeout(timeout_s):
                body = await request.read()
        state.journal.keep_body(request, body)
        return body
    except TimeoutError:
        raise RequestError(
            f"The request body did not arrive within {timeout_s:g} s (server.body_timeout_s).",
            status=408,
            code="request_timeout",
        ) from None
    except asyncio.CancelledError:
        if control.consume_stop() is None:
            raise  # the client left
        retry = {"Retry-After": str(state.config.server.retry_after_s)}
        raise Unavailable(SHUTTING_DOWN, code="server_shutting_down", headers=retry) from None
    finally:
        state.streams.close_upload(control)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``: the OpenAI chat dialect, streamed or whole."""
    state = request.app[STATE]
    config = state.config
    state.journal.note(request).dialect = "openai-chat"
    raw = await _read_body(request, state)
    if (replayed := await replay.answer(request, state, "openai-chat", raw)) is not None:
        return replayed
    same = same_dialect_upstream(request, state, raw, "openai-chat")
    if same is not None:
        upstream, proxied = same
        encoder = OpenAIChunkFormat(
            model=proxied.model, include_usage=proxied.include_usage,
            sentinel=config.server.sentinel,
        )
        return await proxy.forwarded(request, state, upstream, proxied, encoder)
    parsed = parse_chat_completion(raw)
    client = upstream_for(request, state, parsed.overrides.source)
    if client is not None:
        conversation = upstream_conversation(
            config, parsed.model, parsed.messages, parsed.max_tokens, parsed.tools
        )
        encoder = OpenAIChunkFormat(
            model=conversation.model, include_usage=parsed.include_usage,
            sentinel=config.server.sentinel,
        )
        return await proxy.translated(
            request, state, client, conversation, overrides=parsed.overrides,
            stream=parsed.stream, encoder=encoder, answer=completion_body,
        )
    scripted = scripted_start(
        request, state, dialect="openai-chat", model=parsed.model, overrides=parsed.overrides,
        messages=parsed.messages, tools=parsed.tools, max_tokens=parsed.max_tokens,
        prompt_param="messages",
    )
    if parsed.stream:
        encoder = OpenAIChunkFormat(
            model=parsed.model,
            include_usage=parsed.include_usage,
            sentinel=config.server.sentinel,
        )
        return await state.runner.stream(
            request, encoder, scripted.start, faults=scripted.faults,
            resumable=config.resume.enabled_scripted,
        )
    progress, content = await answered_whole(request, state, scripted)
    return web.json_response(completion_body(parsed.model, content, progress.usage))


async def responses(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``: the OpenAI Responses dialect, streamed or whole."""
    state = request.app[STATE]
    state.journal.note(request).dialect = "openai-responses"
    raw = await _read_body(request, state)
    if (replayed := await replay.answer(request, state, "openai-responses", raw)) is not None:
        return replayed
    same = same_dialect_upstream(request, state, raw, "openai-responses")
    if same is not None:
        upstream, proxied = same
        encoder = ResponsesFormat(model=proxied.model)
        return await proxy.forwarded(request, state, upstream, proxied, encoder)
    parsed = parse_responses(raw)
    client = upstream_for(request, state, parsed.overrides.source)
    if client is not None:
        conversation = upstream_conversation(
            state.config, parsed.model, parsed.messages, parsed.max_output_tokens, parsed.tools
        )
        return await proxy.translated(
            request, state, client, conversation, overrides=parsed.overrides,
            stream=parsed.stream, encoder=ResponsesFormat(model=conversation.model),
            answer=response_body,
        )
    scripted = scripted_start(
        request, state, dialect="openai-responses", model=parsed.model,
        overrides=parsed.overrides, messages=parsed.messages, tools=parsed.tools,
        max_tokens=parsed.max_output_tokens, prompt_param="input",
    )
    if parsed.stream:
        return await state.runner.stream(
            request, ResponsesFormat(model=parsed.model), scripted.start, faults=scripted.faults,
            resumable=state.config.resume.enabled_scripted,
        )
    progress, content = await answered_whole(request, state, scripted)
    return web.json_response(response_body(parsed.model, content, progress.usage))


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``: the Anthropic Messages dialect, streamed or whole."""
    state = request.app[STATE]
    state.journal.note(request).dialect = "anthropic"
    raw = await _read_body(request, state)
    if (replayed := await replay.answer(request, state, "anthropic", raw)) is not None:
        return replayed
    same = same_dialect_upstream(request, state, raw, "anthropic")
    if same is not None:
        upstream, proxied = same
        encoder = AnthropicMessagesFormat(model=proxied.model)
        return await proxy.forwarded(request, state, upstream, proxied, encoder, shown=encoder)
    parsed = parse_messages(raw)
    client = upstream_for(request, state, parsed.overrides.source)
    if client is not None:
        conversation = upstream_conversation(
            state.config, parsed.model, parsed.messages, parsed.max_tokens, parsed.tools
        )
        encoder = AnthropicMessagesFormat(model=conversation.model)
        return await proxy.translated(
            request, state, client, conversation, overrides=parsed.overrides,
            stream=parsed.stream, encoder=encoder, answer=message_body, shown=encoder,
        )
    scripted = scripted_start(
        request, state, dialect="anthropic", model=parsed.model, overrides=parsed.overrides,
        messages=parsed.messages, tools=parsed.tools, max_tokens=parsed.max_tokens,
        prompt_param="messages",
    )
    if parsed.stream:
        encoder = AnthropicMessagesFormat(model=parsed.model)
        return await state.runner.stream(
            request, encoder, partial(with_prompt_tokens, scripted.start, encoder),
            faults=scripted.faults, resumable=state.config.resume.enabled_scripted,
        )
    progress, content = await answered_whole(request, state, scripted)
    return web.json_response(message_body(parsed.model, content, progress.usage))


async def ai_sdk_chat(request: web.Request) -> web.StreamResponse:
    """``POST /api/chat`` (``server.ai_sdk_chat_path``): the Vercel AI SDK's UI message
    stream, as ``useChat`` reads it; always streamed (the protocol has no whole answer)."""
    state = request.app[STATE]
    state.journal.note(request).dialect = AI_SDK_UI
    raw = await _read_body(request, state)
    if (replayed := await replay.answer(request, state, AI_SDK_UI, raw)) is not None:
        return replayed
    parsed = parse_ui_chat(raw)
    model = parsed.model or state.config.models[0]
    encoder = UIMessageStreamFormat(message_id=parsed.message_id)
    client = upstream_for(request, state, parsed.overrides.source)
    if client is not None:
        conversation = upstream_conversation(state.config, model, parsed.messages, None, ())
        return await proxy.translated(
            request, state, client, conversation, overrides=parsed.overrides, stream=True,
            encoder=encoder, answer=None, headers=UI_MESSAGE_STREAM_HEADERS,
            chat_id=parsed.chat_id,
        )
    scripted = scripted_start(
        request, state, dialect=AI_SDK_UI, model=model, overrides=parsed.overrides,
        messages=parsed.messages, max_tokens=None, prompt_param="messages",
    )
    return await state.runner.stream(
        request, encoder, scripted.start, headers=UI_MESSAGE_STREAM_HEADERS,
        faults=scripted.faults, resumable=state.config.resume.enabled_scripted,
        chat_id=parsed.chat_id,
    )


async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /v1/stream``: the EventSource and curl endpoint."""
    state = request.app[STATE]
    config = state.config
    state.journal.note(request).dialect = "stream"
    last = request.headers.get("Last-Event-ID")
    if last is not None and request.method == "GET":
        return await reconnected(request, state, last)
    query = parse_stream_query(request.query, [key for key, _ in request.query.items()])
    if (replayed := await replay.answer_query(request, state, query)) is not None:
        return replayed
    client = upstream_for(request, state, query.overrides.source)
    if client is not None:
        return await proxy.stream_query(request, state, client, query)
    model = query.model or config.models[0]
    check_model(config, model)
    source = pick_source(state, query.overrides)
    headers = dict(query.dialect.headers) if query.dialect is not None else None
    if request.method == "HEAD":
        resolve_profile(
            config, query.overrides, header_profile=request.headers.get("X-Tokenstream-Profile")
        )  # a HEAD is refused as its GET would be, but is no call of a sequence
        return head_response(headers)
    messages = [ChatMessage("user", query.prompt)]
    script = ScriptRequest(messages, model, "stream", headers=request.headers)
    answer = scripted_answer(request, state, source, script)
    profile = resolve_profile(
        config, query.overrides, header_profile=request.headers.get("X-Tokenstream-Profile"),
        default=None if answer.rule is None else answer.rule.profile,
    )
    rule_fault = None if answer.rule is None else answer.rule.fault_spec
    faults = resolve_faults(query.overrides, profile, request.headers, state.chaos, rule_fault)
    encoder = encoder_for(query, model, config.server.sentinel)
    max_tokens = query.max_tokens
    del query  # an open stream keeps only what it uses (memory per idle stream)

    start: Callable[[], Awaitable[ScheduledReply]] = partial(
        scheduled_reply, state, answer, messages, profile, max_tokens, "prompt"
    )
    counted = prompt_counted(encoder)
    if counted is not None:
        start = partial(with_prompt_tokens, start, counted)
    return await state.runner.stream(
        request, encoder, start, headers=headers, faults=faults,
        resumable=config.resume.enabled_scripted,
    )
