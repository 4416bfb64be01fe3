"""A request of any client dialect, read for record and replay: the conversation it asks
(what its fixture is keyed by) and how its answer is given (the dialect's encoder, its whole
answer, its headers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenstream.config import Config
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
from tokenstream.dialects.openai_responses import ResponsesFormat, parse_responses, response_body
from tokenstream.dialects.overrides import PacingOverrides
from tokenstream.engine.events import ReplyContent, ReplyEncoder, Usage
from tokenstream.engine.messages import Conversation

__all__ = ["Asked", "WholeAnswer", "read_request"]

WholeAnswer = Callable[[str, ReplyContent, Usage], dict[str, Any]]
"""A client dialect's whole answer: from the model's name, the reply and its usage."""


@dataclass(frozen=True, slots=True)
class Asked:
    """A request read in neutral terms, and its dialect's way of answering."""

    conversation: Conversation
    """With the model the upstream is asked for (``upstream.model``, if set, replaces the
    client's), as it is recorded and matched."""
    stream: bool
    overrides: PacingOverrides
    encoder: ReplyEncoder
    answer: WholeAnswer | None
    """None: the dialect always streams."""
    headers: Mapping[str, str] | None = None


def _model(config: Config, model: str) -> str:
    return config.upstream.model or model


def _chat(raw: bytes, config: Config) -> Asked:
    parsed = parse_chat_completion(raw)
    model = _model(config, parsed.model)
    encoder = OpenAIChunkFormat(
        model=model, include_usage=parsed.include_usage, sentinel=config.server.sentinel
    )
    conversation = Conversation(model, parsed.messages, parsed.max_tokens, parsed.tools)
    return Asked(conversation, parsed.stream, parsed.overrides, encoder, completion_body)


def _responses(raw: bytes, config: Config) -> Asked:
    parsed = parse_responses(raw)
    model = _model(config, parsed.model)
    conversation = Conversation(model, parsed.messages, parsed.max_output_tokens, parsed.tools)
    return Asked(
        conversation, parsed.stream, parsed.overrides, ResponsesFormat(model=model),
        response_body,
    )


def _messages(raw: bytes, config: Config) -> Asked:
    parsed = parse_messages(raw)
    model = _model(config, parsed.model)
    conversation = Conversation(model, parsed.messages, parsed.max_tokens, parsed.tools)
    return Asked(
        conversation, parsed.stream, parsed.overrides, AnthropicMessagesFormat(model=model),
        message_body,
    )


def _ui_chat(raw: bytes, config: Config) -> Asked:
    parsed = parse_ui_chat(raw)
    model = _model(config, parsed.model or config.models[0])
    return Asked(
        Conversation(model, parsed.messages),
        True,
        parsed.overrides,
        UIMessageStreamFormat(message_id=parsed.message_id),
        None,
        UI_MESSAGE_STREAM_HEADERS,
    )


_READERS: dict[str, Callable[[bytes, Config], Asked]] = {
    "openai-chat": _chat,
    "openai-responses": _responses,
    "anthropic": _messages,
    AI_SDK_UI: _ui_chat,
}


def read_request(dialect: str, raw: bytes, config: Config) -> Asked:
    """The request ``raw`` of the client ``dialect`` (a name of ``catalog.DIALECTS``);
    ``RequestError`` (400) when it is not one."""
    return _READERS[dialect](raw, config)
