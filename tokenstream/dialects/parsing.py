"""Parsing and validation of HTTP requests into plain values the pipeline understands.

Every problem becomes an ``InvalidRequest`` naming the parameter, answered as an
OpenAI-style 400. Unknown top-level fields are refused, as the OpenAI API does
("Unrecognized request argument supplied"); the OpenAI fields that have no meaning for a
scripted reply (temperature, tools, ...) are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenstream.config import Config
from tokenstream.dialects.wire import FormatName
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.pacer import PacingProfile
from tokenstream.errors import InvalidRequest

__all__ = [
    "NO_OVERRIDES",
    "ChatCompletionRequest",
    "PacingOverrides",
    "StreamRequest",
    "parse_chat_completion",
    "parse_stream_query",
    "resolve_profile",
]

SourceName = Literal["scripted", "echo", "upstream"]

_PACING_FIELDS = (
    "tokens_per_second",
    "ttft_ms",
    "jitter",
    "seed",
    "chunk_tokens",
    "pause_ms",
    "newline_pause_ms",
    "max_buffer_ms",
)


class PacingOverrides(BaseModel):
    """Profile choice and per-field overrides, from a body's ``tokenstream`` object or a query."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    profile: str | None = Field(default=None, max_length=64)
    source: SourceName | None = None
    tokens_per_second: float | None = None
    ttft_ms: float | None = None
    jitter: float | None = None
    seed: int | None = None
    chunk_tokens: int | None = None
    pause_ms: float | None = None
    newline_pause_ms: float | None = None
    max_buffer_ms: float | None = None


NO_OVERRIDES = PacingOverrides()
"""A request that overrides nothing (shared: the model is frozen)."""


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # tool_calls, refusal, audio, ... are carried along
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    messages: list[_Message] = Field(min_length=1, max_length=10_000)
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    n: int | None = Field(default=None, ge=1, le=1)
    tokenstream: PacingOverrides | None = None

    # Accepted for compatibility, without effect on a scripted reply.
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    seed: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    web_search_options: Any = None


@dataclass(frozen=True, slots=True)
class ChatCompletionRequest:
    model: str
    messages: list[ChatMessage]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    overrides: PacingOverrides


class _StreamQuery(PacingOverrides):
    """The query of ``GET /v1/stream``: the pacing overrides and the stream's own fields."""

    prompt: str = Field(max_length=1_000_000)
    format: FormatName = "text"
    event: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[^\r\n]*$")
    model: str | None = Field(default=None, min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    include_usage: bool = False


@dataclass(frozen=True, slots=True)
class StreamRequest:
    prompt: str
    format: FormatName
    event: str | None
    model: str | None
    max_tokens: int | None
    include_usage: bool
    overrides: PacingOverrides


def _invalid(error: ValidationError, prefix: str = "") -> InvalidRequest:
    item = error.errors(include_url=False)[0]
    param = prefix + ".".join(str(part) for part in item["loc"])
    if item["type"] == "json_invalid":
        return InvalidRequest(
            f"The request body is not valid JSON: {item['msg']}", code="invalid_json"
        )
    if item["type"] == "extra_forbidden":
        return InvalidRequest(
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    if item["type"] == "missing":
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if item["type"] == "model_type" and not item["loc"]:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    return InvalidRequest(
        f"Invalid value for '{param}': {item['msg']}.", param=param, code="invalid_value"
    )


def parse_chat_completion(body: bytes) -> ChatCompletionRequest:
    try:
        parsed = _ChatBody.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    if parsed.stream_options is not None and not parsed.stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    messages = [ChatMessage(m.role, m.text(), m.name) for m in parsed.messages]
    return ChatCompletionRequest(
        model=parsed.model,
        messages=messages,
        stream=bool(parsed.stream),
        include_usage=bool(parsed.stream_options and parsed.stream_options.include_usage),
        max_tokens=parsed.max_completion_tokens or parsed.max_tokens,
        overrides=parsed.tokenstream or NO_OVERRIDES,
    )


def parse_stream_query(query: Mapping[str, str], keys: list[str]) -> StreamRequest:
    """``keys`` is every key as sent, to refuse a parameter given twice."""
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise InvalidRequest(
                f"Parameter '{key}' is given more than once.", param=key, code="invalid_value"
            )
        seen.add(key)
    try:
        parsed = _StreamQuery.model_validate(dict(query))
    except ValidationError as exc:
        raise _invalid(exc) from None
    overrides = PacingOverrides(
        **{
            name: getattr(parsed, name)
            for name in ("profile", "source", *_PACING_FIELDS)
            if name in parsed.model_fields_set
        }
    )
    return StreamRequest(
        prompt=parsed.prompt,
        format=parsed.format,
        event=parsed.event,
        model=parsed.model,
        max_tokens=parsed.max_tokens,
        include_usage=parsed.include_usage,
        overrides=overrides,
    )


def resolve_profile(
    config: Config,
    overrides: PacingOverrides,
    header_profile: str | None = None,
    prefix: str = "",
    default: str | None = None,
) -> PacingProfile:
    """The named profile (body/query, then header, then ``default`` or the config's default)
    with per-field overrides."""
    name = overrides.profile or header_profile or default or config.default_profile
    profile = config.profiles.get(name)
    if profile is None:
        param = f"{prefix}profile" if overrides.profile else "X-Tokenstream-Profile"
        raise InvalidRequest(
            f"Unknown profile '{name}' in '{param}'. "
            f"Available profiles: {', '.join(sorted(config.profiles))}.",
            param=param,
            code="profile_not_found",
        )
    changes = {
        field: getattr(overrides, field)
        for field in _PACING_FIELDS
        if field in overrides.model_fields_set
    }
    if not changes:
        return profile
    try:
        return _overridden(profile, tuple(changes.items()))
    except ValidationError as exc:
        raise _invalid(exc, prefix) from None


@lru_cache(maxsize=256)
def _overridden(profile: PacingProfile, changes: tuple[tuple[str, Any], ...]) -> PacingProfile:
    # Profiles are frozen: streams asking for the same overrides share one (a profile is
    # about 1 KiB, kept for as long as its stream is open).
    return PacingProfile.model_validate({**profile.model_dump(), **dict(changes)})
