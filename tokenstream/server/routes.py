"""The handlers: each parses its request with its dialect, picks the source, and hands the
reply to the runner. A request for the upstream goes to ``proxy``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from tokenstream.config import Config, UpstreamDialect
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
from tokenstream.dialects.catalog import AI_SDK_UI, PromptCounted
from tokenstream.dialects.openai_chat import (
    OpenAIChunkFormat,
    ProxyRequest,
    completion_body,
    parse_chat_completion,
    parse_proxy_request,
)
from tokenstream.dialects.openai_responses import (
    ResponsesFormat,
    parse_responses,
    response_body,
)
from tokenstream.dialects.overrides import PacingOverrides, resolve_faults, resolve_profile
from tokenstream.dialects.stream_query import encoder_for, parse_stream_query, prompt_counted
from tokenstream.engine.accounting import current_record
from tokenstream.engine.events import ReplyContent
from tokenstream.engine.faults import Fault
from tokenstream.engine.messages import ChatMessage, Conversation, ToolSpec
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.reply import (
    ReplyProgress,
    ScheduledReply,
    count_prompt_tokens,
    whole_reply,
)
from tokenstream.engine.runner import SHUTTING_DOWN
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import InvalidRequest, NotFound, RequestError, Unavailable
from tokenstream.server import proxy, replay
from tokenstream.server.limits import check_prompt_tokens, reply_token_limit
from tokenstream.server.resume_routes import reconnected
from tokenstream.server.state import STATE, AppState
from tokenstream.sources.matching import ScriptRequest
from tokenstream.sources.scripted import ScriptedReply, ScriptSource
from tokenstream.sources.upstream import UPSTREAM, UpstreamClient
from tokenstream.sse.transport import head_response

__all__ = ["ai_sdk_chat", "chat_completions", "messages", "responses", "stream"]

log = logging.getLogger(__name__)

_COUNT_INLINE_CHARS = 16_384
"""Prompts longer than this are counted in a worker thread (about 2 ms of tokenizing)."""


def _pick_source(state: AppState, overrides: PacingOverrides) -> ScriptSource:
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


def _answer(
    request: web.Request, state: AppState, source: ScriptSource, script: ScriptRequest
) -> ScriptedReply:
    """The source's answer to ``script``; the rule it chose goes in the journal."""
    answer = source.answer(script)
    if state.journal:
        note = state.journal.note(request)
        note.rule, note.call = answer.rule, answer.call
    return answer


async def _scheduled(
    state: AppState,
    answer: ScriptedReply,
    messages: list[ChatMessage],
    profile: PacingProfile,
    max_tokens: int | None,
    prompt_param: str,
) -> ScheduledReply:
    """A scripted or echo reply made ready: the prompt counted and checked, the text got.
    ``answer.rule`` is the rule that chose it (its ``fault``), if any."""
    server = state.config.server
    if sum(len(message.content) for message in messages) > _COUNT_INLINE_CHARS:
        # tiktoken releases the GIL: a long prompt is counted without stalling every stream
        prompt_tokens = await asyncio.to_thread(count_prompt_tokens, state.tokenizer, messages)
    else:
        prompt_tokens = count_prompt_tokens(state.tokenizer, messages)
    progress = ReplyProgress(prompt_tokens=prompt_tokens)
    check_prompt_tokens(server, progress.prompt_tokens, prompt_param)
    max_tokens = reply_token_limit(server, max_tokens, "max_tokens")
    return ScheduledReply(
        await whole_reply(answer.stream()),
        tokenizer=state.tokenizer,
        profile=profile,
        max_tokens=max_tokens,
        progress=progress,
        clock=state.clock,
        stats=state.stats,
        lateness=state.lateness,
    )


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


async def _complete(
    state: AppState, start: Callable[[], Awaitable[ScheduledReply]]
) -> tuple[ScheduledReply, ReplyContent]:
    """A whole reply, returned when the paced reply would have ended."""
    reply = await start()
    events = list(reply.schedule())
    content = ReplyContent()
    for _, item in events:
        content.add(item if isinstance(item, Piece) else item.event)
    if events:
        await state.clock.sleep_until(events[-1][0])
    content.finish_reason = reply.progress.finish_reason
    return reply, content


def _same_dialect_upstream(
    request: web.Request, state: AppState, raw: bytes, dialect: UpstreamDialect
) -> tuple[UpstreamClient, ProxyRequest] | None:
    """The upstream and the client's body for it, when the request is to be proxied to an
    upstream of the client's own dialect (the body goes as it is: only what tokenstream
    needs is read from it)."""
    upstream = state.config.upstream
    if upstream.base_url is None or upstream.dialect != dialect:
        return None
    proxied = parse_proxy_request(raw, upstream.model)
    client = _upstream_for(request, state, proxied.overrides.source)
    return None if client is None else (client, proxied)


def _conversation(
    config: Config, model: str, messages: list[ChatMessage], max_tokens: int | None,
    tools: tuple[ToolSpec, ...],
) -> Conversation:
    """A parsed request for an upstream of another dialect."""
    return Conversation(config.upstream.model or model, messages, max_tokens, tools)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``: the OpenAI chat dialect, streamed or whole."""
    state = request.app[STATE]
    config = state.config
    state.journal.note(request).dialect = "openai-chat"
    raw = await _read_body(request, state)
    if (replayed := await replay.answer(request, state, "openai-chat", raw)) is not None:
        return replayed
    same = _same_dialect_upstream(request, state, raw, "openai-chat")
    if same is not None:
        upstream, proxied = same
        encoder = OpenAIChunkFormat(
            model=proxied.model, include_usage=proxied.include_usage,
            sentinel=config.server.sentinel,
        )
        return await proxy.forwarded(request, state, upstream, proxied, encoder)
    parsed = parse_chat_completion(raw)
    client = _upstream_for(request, state, parsed.overrides.source)
    if client is not None:
        conversation = _conversation(
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
    scripted = _scripted_start(
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
    progress, content = await _whole(request, state, scripted)
    return web.json_response(completion_body(parsed.model, content, progress.usage))


async def _counted(
    start: Callable[[], Awaitable[ScheduledReply]], encoder: PromptCounted
) -> ScheduledReply:
    """``start``, and the prompt's token count handed to the encoder (its first event)."""
    reply = await start()
    encoder.input_tokens = reply.progress.prompt_tokens
    return reply


@dataclass(frozen=True, slots=True)
class _Scripted:
    """How a reply from the scripted or echo source starts, and the faults injected into it."""

    start: Callable[[], Awaitable[ScheduledReply]]
    faults: tuple[Fault, ...]


def _scripted_start(
    request: web.Request,
    state: AppState,
    *,
    dialect: str,
    model: str,
    overrides: PacingOverrides,
    messages: list[ChatMessage],
    tools: tuple[ToolSpec, ...] = (),
    max_tokens: int | None,
    prompt_param: str,
) -> _Scripted:
    """How a dialect's reply from the scripted or echo source starts: the rule chosen (a 404
    in strict mode when none matches), then its pacing profile (the request's, else the
    rule's, else the default) and the faults injected into it."""
    config = state.config
    _check_model(config, model)
    source = _pick_source(state, overrides)
    script = ScriptRequest(
        messages, model, dialect, tuple(tool.name for tool in tools), request.headers
    )
    answer = _answer(request, state, source, script)
    profile = resolve_profile(
        config,
        overrides,
        header_profile=request.headers.get("X-Tokenstream-Profile"),
        prefix="tokenstream.",
        default=None if answer.rule is None else answer.rule.profile,
    )
    rule_fault = None if answer.rule is None else answer.rule.fault_spec
    faults = resolve_faults(overrides, profile, request.headers, state.chaos, rule_fault)
    # partials, not closures: an open stream keeps its handler's frame, and a closure would
    # turn each variable it uses into a cell object (memory and GC work per stream)
    start = partial(_scheduled, state, answer, messages, profile, max_tokens, prompt_param)
    return _Scripted(start, faults)


async def _whole(
    request: web.Request, state: AppState, scripted: _Scripted
) -> tuple[ReplyProgress, ReplyContent]:
    """A reply answered whole: its progress (usage) and its content (with the finish)."""
    reply, content = await state.runner.whole(
        request, partial(_complete, state, scripted.start), faults=scripted.faults
    )
    current_record().tokens = reply.progress.completion_tokens
    return reply.progress, content


async def responses(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``: the OpenAI Responses dialect, streamed or whole."""
    state = request.app[STATE]
    state.journal.note(request).dialect = "openai-responses"
    raw = await _read_body(request, state)
    if (replayed := await replay.answer(request, state, "openai-responses", raw)) is not None:
        return replayed
    same = _same_dialect_upstream(request, state, raw, "openai-responses")
    if same is not None:
        upstream, proxied = same
        encoder = ResponsesFormat(model=proxied.model)
        return await proxy.forwarded(request, state, upstream, proxied, encoder)
    parsed = parse_responses(raw)
    client = _upstream_for(request, state, parsed.overrides.source)
    if client is not None:
        conversation = _conversation(
            state.config, parsed.model, parsed.messages, parsed.max_output_tokens, parsed.tools
        )
        return await proxy.translated(
            request, state, client, conversation, overrides=parsed.overrides,
            stream=parsed.stream, encoder=ResponsesFormat(model=conversation.model),
            answer=response_body,
        )
    scripted = _scripted_start(
        request, state, dialect="openai-responses", model=parsed.model,
        overrides=parsed.overrides, messages=parsed.messages, tools=parsed.tools,
        max_tokens=parsed.max_output_tokens, prompt_param="input",
    )
    if parsed.stream:
        return await state.runner.stream(
            request, ResponsesFormat(model=parsed.model), scripted.start, faults=scripted.faults,
            resumable=state.config.resume.enabled_scripted,
        )
    progress, content = await _whole(request, state, scripted)
    return web.json_response(response_body(parsed.model, content, progress.usage))


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``: the Anthropic Messages dialect, streamed or whole."""
    state = request.app[STATE]
    state.journal.note(request).dialect = "anthropic"
    raw = await _read_body(request, state)
    if (replayed := await replay.answer(request, state, "anthropic", raw)) is not None:
        return replayed
    same = _same_dialect_upstream(request, state, raw, "anthropic")
    if same is not None:
        upstream, proxied = same
        encoder = AnthropicMessagesFormat(model=proxied.model)
        return await proxy.forwarded(request, state, upstream, proxied, encoder, shown=encoder)
    parsed = parse_messages(raw)
    client = _upstream_for(request, state, parsed.overrides.source)
    if client is not None:
        conversation = _conversation(
            state.config, parsed.model, parsed.messages, parsed.max_tokens, parsed.tools
        )
        encoder = AnthropicMessagesFormat(model=conversation.model)
        return await proxy.translated(
            request, state, client, conversation, overrides=parsed.overrides,
            stream=parsed.stream, encoder=encoder, answer=message_body, shown=encoder,
        )
    scripted = _scripted_start(
        request, state, dialect="anthropic", model=parsed.model, overrides=parsed.overrides,
        messages=parsed.messages, tools=parsed.tools, max_tokens=parsed.max_tokens,
        prompt_param="messages",
    )
    if parsed.stream:
        encoder = AnthropicMessagesFormat(model=parsed.model)
        return await state.runner.stream(
            request, encoder, partial(_counted, scripted.start, encoder), faults=scripted.faults,
            resumable=state.config.resume.enabled_scripted,
        )
    progress, content = await _whole(request, state, scripted)
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
    client = _upstream_for(request, state, parsed.overrides.source)
    if client is not None:
        conversation = _conversation(state.config, model, parsed.messages, None, ())
        return await proxy.translated(
            request, state, client, conversation, overrides=parsed.overrides, stream=True,
            encoder=encoder, answer=None, headers=UI_MESSAGE_STREAM_HEADERS,
            chat_id=parsed.chat_id,
        )
    scripted = _scripted_start(
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
    client = _upstream_for(request, state, query.overrides.source)
    if client is not None:
        return await proxy.stream_query(request, state, client, query)
    model = query.model or config.models[0]
    _check_model(config, model)
    source = _pick_source(state, query.overrides)
    headers = dict(query.dialect.headers) if query.dialect is not None else None
    if request.method == "HEAD":
        resolve_profile(
            config, query.overrides, header_profile=request.headers.get("X-Tokenstream-Profile")
        )  # a HEAD is refused as its GET would be, but is no call of a sequence
        return head_response(headers)
    messages = [ChatMessage("user", query.prompt)]
    answer = _answer(request, state, source, ScriptRequest(messages, model, "stream",
                                                           headers=request.headers))
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
        _scheduled, state, answer, messages, profile, max_tokens, "prompt"
    )
    counted = prompt_counted(encoder)
    if counted is not None:
        start = partial(_counted, start, counted)
    return await state.runner.stream(
        request, encoder, start, headers=headers, faults=faults,
        resumable=config.resume.enabled_scripted,
    )
