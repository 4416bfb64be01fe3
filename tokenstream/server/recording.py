"""Recording, the server's side: which upstream requests are recorded, and the conversation
each fixture is keyed by (``sources.recording`` stamps and stores the reply)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web

from tokenstream.engine.events import ReplyEvent
from tokenstream.engine.messages import Conversation
from tokenstream.errors import RequestError
from tokenstream.server.replay_requests import read_request
from tokenstream.server.state import AppState
from tokenstream.sources.recording import Recorder

__all__ = ["RECORDER", "Recording", "add_recorder", "forwarded_recording", "recording"]

log = logging.getLogger(__name__)

RECORDER = web.AppKey("recorder", Recorder)


def add_recorder(app: web.Application, recorder: Recorder) -> None:
    """Record the app's upstream replies with ``recorder``; at cleanup, wait for the
    fixtures being written."""
    app[RECORDER] = recorder
    app.on_cleanup.append(partial(_written, recorder))


async def _written(recorder: Recorder, app: web.Application) -> None:
    await recorder.aclose()


@dataclass(frozen=True, slots=True)
class Recording:
    """One upstream request to record, and the conversation its fixture is keyed by."""

    recorder: Recorder
    conversation: Conversation

    def tap(
        self, items: AsyncGenerator[ReplyEvent, None], sent_at: float
    ) -> AsyncGenerator[ReplyEvent, None]:
        return self.recorder.tap(items, self.conversation, sent_at)


def recording(request: web.Request, conversation: Conversation) -> Recording | None:
    """The recording of the upstream's reply to ``conversation``, when recording is on."""
    recorder = request.app.get(RECORDER)
    return None if recorder is None else Recording(recorder, conversation)


def forwarded_recording(
    request: web.Request, state: AppState, body: Mapping[str, Any] | bytes
) -> Recording | None:
    """``recording`` of a request forwarded in the upstream's own dialect, read for its
    conversation; one tokenstream cannot read is passed on unrecorded."""
    if RECORDER not in request.app:
        return None
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    try:
        asked = read_request(state.config.upstream.dialect, raw, state.config)
    except RequestError as error:
        log.info("upstream reply not recorded: its request cannot be read (%s)", error.message)
        return None
    return recording(request, asked.conversation)
