"""Where a request's reply comes from, and how it starts.

The handlers (``routes``) ask here, after replay (``replay``) has had its turn:

- the upstream, when it is the source asked for: its client (``upstream_for``), with the
  client's body as it was sent when the upstream speaks the client's dialect
  (``same_dialect_upstream``), else the parsed request as a ``Conversation`` for ``proxy``
  to translate (``upstream_conversation``);
- else the scripted or echo source (``scripted_start``): the model checked, the rule chosen
  and noted in the journal, the pacing profile and the faults resolved, and a ``start``
  that counts the prompt and makes the ``ScheduledReply``; streamed by the runner, or
  answered whole (``answered_whole``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from tokenstream.config import Config, UpstreamDialect
from tokenstream.dialects.catalog import PromptCounted
from tokenstream.dialects.openai_chat import ProxyRequest, parse_proxy_request
from tokenstream.dialects.overrides import PacingOverrides, resolve_faults, resolve_profile
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
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import InvalidRequest, NotFound
from tokenstream.server.limits import check_prompt_tokens, reply_token_limit
from tokenstream.server.state import AppState
from tokenstream.sources.matching import ScriptRequest
from tokenstream.sources.scripted import ScriptedReply, ScriptSource
from tokenstream.sources.upstream import UPSTREAM, UpstreamClient

__all__ = [
    "ScriptedStart",
    "answered_whole",
    "check_model",
    "pick_source",
    "same_dialect_upstream",
    "scheduled_reply",
    "scripted_answer",
    "scripted_start",
    "upstream_conversation",
    "upstream_for",
    "with_prompt_tokens",
]

_COUNT_INLINE_CHARS = 16_384
"""Prompts longer than this are counted in a worker thread (about 2 ms of tokenizing)."""


def upstream_for(
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


def same_dialect_upstream(
    request: web.Request, state: AppState, raw: bytes, dialect: UpstreamDialect
) -> tuple[UpstreamClient, ProxyRequest] | None:
    """The upstream and the client's body for it, when the request is to be proxied to an
    upstream of the client's own dialect (the body goes as it is: only what tokenstream
    needs is read from it)."""
    upstream = state.config.upstream
    if upstream.base_url is None or upstream.dialect != dialect:
        return None
    proxied = parse_proxy_request(raw, upstream.model)
    client = upstream_for(request, state, proxied.overrides.source)
    return None if client is None else (client, proxied)


def upstream_conversation(
    config: Config, model: str, messages: list[ChatMessage], max_tokens: int | None,
    tools: tuple[ToolSpec, ...],
) -> Conversation:
    """A parsed request for an upstream of another dialect."""
    return Conversation(config.upstream.model or model, messages, max_tokens, tools)


def check_model(config: Config, model: str, param: str = "model") -> None:
    if config.strict_models and model not in config.models:
        raise NotFound(
            f"The model '{model}' does not exist. Available models: {', '.join(config.models)}.",
            param=param,
            code="model_not_found",
        )


def pick_source(state: AppState, overrides: PacingOverrides) -> ScriptSource:
    name = overrides.source or state.config.default_source
    if name not in state.sources:
        raise InvalidRequest(
            f"The source '{name}' is not available here"
            + (": set upstream.base_url to use it." if name == "upstream" else "."),
            param="source",
            code="invalid_value",
        )
    return state.sources[name]


def scripted_answer(
    request: web.Request, state: AppState, source: ScriptSource, script: ScriptRequest
) -> ScriptedReply:
    """The source's answer to ``script``; the rule it chose goes in the journal."""
    answer = source.answer(script)
    if state.journal:
        note = state.journal.note(request)
        note.rule, note.call = answer.rule, answer.call
    return answer


async def scheduled_reply(
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


async def with_prompt_tokens(
    start: Callable[[], Awaitable[ScheduledReply]], encoder: PromptCounted
) -> ScheduledReply:
    """``start``, and the prompt's token count handed to the encoder (its first event)."""
    reply = await start()
    encoder.input_tokens = reply.progress.prompt_tokens
    return reply


@dataclass(frozen=True, slots=True)
class ScriptedStart:
    """How a reply from the scripted or echo source starts, and the faults injected into it."""

    start: Callable[[], Awaitable[ScheduledReply]]
    faults: tuple[Fault, ...]


def scripted_start(
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
) -> ScriptedStart:
    """How a dialect's reply from the scripted or echo source starts: the rule chosen (a 404
    in strict mode when none matches), then its pacing profile (the request's, else the
    rule's, else the default) and the faults injected into it."""
    config = state.config
    check_model(config, model)
    source = pick_source(state, overrides)
    script = ScriptRequest(
        messages, model, dialect, tuple(tool.name for tool in tools), request.headers
    )
    answer = scripted_answer(request, state, source, script)
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
    start = partial(scheduled_reply, state, answer, messages, profile, max_tokens, prompt_param)
    return ScriptedStart(start, faults)


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


async def answered_whole(
    request: web.Request, state: AppState, scripted: ScriptedStart
) -> tuple[ReplyProgress, ReplyContent]:
    """A reply answered whole: its progress (usage) and its content (with the finish)."""
    reply, content = await state.runner.whole(
        request, partial(_complete, state, scripted.start), faults=scripted.faults
    )
    current_record().tokens = reply.progress.completion_tokens
    return reply.progress, content
