"""Record and replay, the server's side: the fixture directories opened at start-up, and
requests answered from a fixture in their own dialect.

Every handler first offers its request here (``answer``; ``answer_query`` for ``GET
/v1/stream``). With ``replay.dir`` set, the request is read in neutral terms and its key
looked up: a fixture answers it, streamed or whole, in the client's dialect, whatever the
dialect it was recorded from:

- with the recorded timing (``engine.replay.replay_schedule``): each token at its recorded
  arrival after the request came, divided by ``replay.speed``, on the scheduled path;
- re-paced, when ``replay.profile`` is set or the request asks for a profile or pacing:
  the recorded events go through that profile's pacing, as a scripted reply's do.

A request no fixture matches is the handler's to answer as it would without replay
(``replay.on_miss``: ``upstream``, ``default``), or a 404 in the dialect's error shape
naming the fixture looked for (``fail``). A request that asks for the scripted or echo
source by name is never replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from aiohttp import web

from tokenstream.config import Config
from tokenstream.dialects.overrides import (
    PACING_FIELDS,
    PacingOverrides,
    resolve_faults,
    resolve_profile,
)
from tokenstream.dialects.stream_query import StreamRequest, encoder_for, prompt_counted
from tokenstream.engine.accounting import current_record
from tokenstream.engine.events import ReplyContent, Usage
from tokenstream.engine.messages import ChatMessage, Conversation
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.replay import (
    ReplayedReply,
    TimedEvent,
    closing_events,
    repaced_schedule,
    replay_schedule,
)
from tokenstream.engine.reply import ReplyProgress, count_prompt_tokens
from tokenstream.errors import NotFound, RequestError
from tokenstream.server.recording import add_recorder
from tokenstream.server.replay_requests import Asked, read_request
from tokenstream.server.state import AppState
from tokenstream.sources.fixture_store import FixtureStore
from tokenstream.sources.fixtures import Fixture, fixture_key, normalised_request
from tokenstream.sources.recording import Recorder

__all__ = ["REPLAY", "add_record_replay", "answer", "answer_query"]

log = logging.getLogger(__name__)

REPLAY = web.AppKey("replay", FixtureStore)


def add_record_replay(app: web.Application, config: Config) -> None:
    """Open ``record.dir`` and ``replay.dir`` (one store when they are the same directory:
    what is recorded is replayed from then on); ``FixtureError`` stops start-up."""
    recording = None
    if config.record.dir is not None:
        recording = FixtureStore.for_recording(config.record.dir)
    if config.replay.dir is not None:
        store = FixtureStore.read(config.replay.dir)
        app[REPLAY] = store
        log.info("replaying %d fixtures from %s", len(store), store.directory)
        if recording is not None and _same_directory(recording, store):
            recording = store
    if recording is not None:
        add_recorder(app, Recorder(recording, config.upstream.dialect, config.upstream.base_url))


def _same_directory(one: FixtureStore, other: FixtureStore) -> bool:
    return one.directory.resolve() == other.directory.resolve()


async def answer(
    request: web.Request, state: AppState, dialect: str, raw: bytes
) -> web.StreamResponse | None:
    """The answer from a fixture to a request of the client ``dialect`` (a name of
    ``catalog.DIALECTS``); None when the handler is to answer it as without replay."""
    store = request.app.get(REPLAY)
    if store is None:
        return None
    try:
        asked = read_request(dialect, raw, state.config)
    except RequestError:
        if state.config.replay.on_miss == "fail":
            raise
        return None  # the handler reads it again: its own 400, or the upstream's answer
    return await _answer(request, state, store, asked, "tokenstream.")


async def answer_query(
    request: web.Request, state: AppState, query: StreamRequest
) -> web.StreamResponse | None:
    """``answer`` for ``GET /v1/stream``: the prompt as one user message."""
    store = request.app.get(REPLAY)
    if store is None or request.method == "HEAD":
        return None
    config = state.config
    model = config.upstream.model or query.model or config.models[0]
    asked = Asked(
        Conversation(model, [ChatMessage("user", query.prompt)], query.max_tokens),
        True,
        query.overrides,
        encoder_for(query, model, config.server.sentinel),
        None,
        dict(query.dialect.headers) if query.dialect is not None else None,
    )
    return await _answer(request, state, store, asked, "")


async def _answer(
    request: web.Request, state: AppState, store: FixtureStore, asked: Asked, prefix: str
) -> web.StreamResponse | None:
    if asked.overrides.source in ("scripted", "echo"):
        return None
    key = fixture_key(normalised_request(asked.conversation))
    fixture = store.get(key)
    if fixture is None:
        if state.config.replay.on_miss == "fail":
            raise _missed(store, key)
        return None
    profile = _repacing(request, state.config, asked.overrides, prefix)
    faults = resolve_faults(
        asked.overrides,
        profile or state.config.profiles[state.config.upstream.profile],
        request.headers,
        state.chaos,
    )
    if asked.stream or asked.answer is None:
        start = partial(_reply, state, fixture, asked, profile)
        return await state.runner.stream(
            request, asked.encoder, start, headers=asked.headers, faults=faults,
            resumable=state.config.resume.enabled_scripted,
        )
    content = await state.runner.whole(
        request, partial(_content, state, fixture, profile), faults=faults
    )
    usage = content.usage or _counted_usage(state, asked.conversation.messages, content)
    current_record().tokens = usage.completion_tokens
    model = content.model or asked.conversation.model
    return web.json_response(asked.answer(model, content, usage))


def _missed(store: FixtureStore, key: str) -> NotFound:
    return NotFound(
        f"No recorded reply matches this request: the fixture {key} is not in "
        f"{store.directory} (replay.on_miss: fail). Record it with tokenstream serve "
        f"--upstream URL --record {store.directory}.",
        code="fixture_not_found",
    )


def _repacing(
    request: web.Request, config: Config, overrides: PacingOverrides, prefix: str
) -> PacingProfile | None:
    """The profile a replayed reply is re-paced with; None for the recorded timing."""
    header = request.headers.get("X-Tokenstream-Profile")
    asked = (
        header is not None
        or overrides.profile is not None
        or any(
            name in overrides.model_fields_set
            for name in PACING_FIELDS
            if name not in ("fault", "chaos")  # faults are not pacing: the timing stays
        )
    )
    if config.replay.profile is None and not asked:
        return None
    return resolve_profile(
        config, overrides, header_profile=header, prefix=prefix, default=config.replay.profile
    )


def _prompt_tokens(state: AppState, fixture: Fixture, messages: Sequence[ChatMessage]) -> int:
    """The prompt's tokens: as the upstream counted them, else tokenstream's count."""
    for _, event in fixture.events:
        if isinstance(event, Usage):
            return event.prompt_tokens
    return count_prompt_tokens(state.tokenizer, messages)


async def _reply(
    state: AppState, fixture: Fixture, asked: Asked, profile: PacingProfile | None
) -> ReplayedReply:
    """The fixture's reply, timed from now (the request came a moment ago, as the recorded
    arrivals count from the request)."""
    shown = prompt_counted(asked.encoder)
    if shown is not None:  # Anthropic's message_start tells the prompt's tokens first
        shown.input_tokens = _prompt_tokens(state, fixture, asked.conversation.messages)
    start = state.clock.now()
    events = fixture.events
    if profile is None:
        return ReplayedReply(
            replay_schedule(events, state.tokenizer, start, state.config.replay.speed),
            closing=(), clock=state.clock, stats=state.stats, lateness=state.lateness,
        )
    items = repaced_schedule(
        events, tokenizer=state.tokenizer, profile=profile, start=start,
        progress=ReplyProgress(),
    )
    return ReplayedReply(
        items, closing=closing_events(events), clock=state.clock, stats=state.stats,
        lateness=state.lateness if profile.tokens_per_second is not None else None,
    )


async def _content(
    state: AppState, fixture: Fixture, profile: PacingProfile | None
) -> ReplyContent:
    """The fixture's reply added up, returned when its stream would have ended."""
    start = state.clock.now()
    events: Sequence[TimedEvent] = fixture.events
    if profile is None:
        end = start + events[-1][0] / state.config.replay.speed
    else:
        end = start
        for deadline, _ in repaced_schedule(
            events, tokenizer=state.tokenizer, profile=profile, start=start,
            progress=ReplyProgress(),
        ):
            end = deadline
    content = ReplyContent()
    for _, event in events:
        content.add(event)
    await state.clock.sleep_until(end)
    return content


def _counted_usage(
    state: AppState, messages: Sequence[ChatMessage], content: ReplyContent
) -> Usage:
    """The usage of a recording that has none: tokenstream's own count."""
    tokenizer = state.tokenizer
    completion = tokenizer.count(content.text + content.reasoning) + sum(
        tokenizer.count(call.name + call.arguments) for call in content.tool_calls
    )
    return Usage(count_prompt_tokens(tokenizer, messages), completion)

