"""The reconnects of resumable streams (docs/RELIABILITY.md "Resumable streams"): by stream id
in any dialect, by the AI SDK's chat id, and an ``EventSource``'s ``Last-Event-ID`` on
``GET /v1/stream`` (``routes.stream`` hands it here). Each gets the missed events and the rest
(``engine.resume``), 204 or 404: a reconnect never starts a reply again."""

from __future__ import annotations

from aiohttp import web

from tokenstream.dialects.catalog import AI_SDK_UI
from tokenstream.engine.accounting import current_record
from tokenstream.engine.resume import serve_finished
from tokenstream.engine.streamlog import STREAM_ID_HEADER, parse_event_id
from tokenstream.errors import InvalidRequest, NotFound
from tokenstream.server.state import STATE, AppState
from tokenstream.sse.transport import SSEResponse

__all__ = ["ai_sdk_resume", "reconnected", "resumed_stream"]


async def ai_sdk_resume(request: web.Request) -> web.StreamResponse:
    """``GET /api/chat/{chatId}/stream``: the AI SDK's ``resumeStream()`` (``useChat({resume:
    true})``): the chat's running stream from its start (the SDK replaces the message it
    shows), then the rest as it comes; 204 when the chat has none."""
    state = request.app[STATE]
    state.journal.note(request).dialect = AI_SDK_UI
    logs = state.runner.logs
    log = None if logs is None else await logs.find_chat(request.match_info["chat_id"])
    if log is None or not log.resumable:
        return web.Response(status=204)
    return await _resume(request, state, log.stream_id, 0)


async def resumed_stream(request: web.Request) -> web.StreamResponse:
    """``GET /v1/streams/{id}``: a stream of any dialect resumed after the event named by
    ``Last-Event-ID`` (``<id>:<sequence>``) or ``?after=<sequence>``; from its start
    without either."""
    state = request.app[STATE]
    stream_id = request.match_info["stream_id"]
    after = 0
    last = request.headers.get("Last-Event-ID")
    if last is not None:
        parsed = parse_event_id(last)
        if parsed is None or parsed[0] != stream_id:
            raise InvalidRequest(
                f"Last-Event-ID '{last}' is not an event of the stream '{stream_id}' (it reads "
                f"'{stream_id}:<sequence>').", param="Last-Event-ID", code="invalid_value",
            )
        after = parsed[1]
    elif "after" in request.query:
        value = request.query["after"]
        if not value.isdigit() or len(value) > 18:
            raise InvalidRequest(
                f"after must be an event's sequence number (0 or more), not '{value}'.",
                param="after", code="invalid_value",
            )
        after = int(value)
    return await _resume(request, state, stream_id, after)


async def reconnected(request: web.Request, state: AppState, last: str) -> web.StreamResponse:
    """An ``EventSource`` reconnecting to ``GET /v1/stream`` with ``Last-Event-ID``: the
    stream it names resumed, or 204 / 404; the reply is never started again under it."""
    if last == "done":  # (the ending's id before streams had ids)
        return web.Response(status=204)
    parsed = parse_event_id(last)
    if parsed is None:
        raise NotFound(
            f"Last-Event-ID '{last}' names no stream of this server (ids read '<stream "
            "id>:<sequence>'): it cannot be resumed.", code="stream_not_found",
        )
    return await _resume(request, state, *parsed)


async def _resume(
    request: web.Request, state: AppState, stream_id: str, after: int
) -> web.StreamResponse:
    """A reconnect to ``stream_id`` that saw every event up to ``after``: the events it
    missed, then the rest as they come; 204 when there is nothing more (the stream ended
    and was all seen, or it cannot be resumed: the reply is never started again); 404
    when the stream is unknown, expired, or its log no longer holds what was missed."""
    runner = state.runner
    log = None if runner.logs is None else await runner.logs.find(stream_id)
    if log is None:
        raise NotFound(
            f"The stream '{stream_id}' is unknown or has expired (resume.ttl_s): it "
            "cannot be resumed.", code="stream_not_found",
        )
    if not log.resumable or (log.finished and after >= log.last_seq):
        return web.Response(status=204, headers={STREAM_ID_HEADER: stream_id})
    if not log.has_after(after):
        raise NotFound(
            f"The stream '{stream_id}' no longer keeps the events after {after} "
            "(resume.max_events_per_stream, resume.max_bytes_per_stream), or never sent "
            "that one: it cannot be resumed.", code="stream_events_not_kept",
        )
    current_record().stream = True
    limits = runner.limits
    sse = SSEResponse(
        request, runner.clock, send_timeout=limits.send_timeout_s,
        max_buffered=limits.max_buffered_bytes,
        headers={**log.headers, STREAM_ID_HEADER: stream_id},
    )
    await sse.prepare()
    feed = log.feed  # (None once the reply made here ended; a shared store's reader)
    if feed is None:
        await serve_finished(log, sse, after)
    else:
        await feed.serve(sse, after)
    return sse.response
