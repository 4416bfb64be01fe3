"""OpenAI chat completions requests: the body of ``POST /v1/chat/completions``, for a
scripted reply or for an upstream.

For a scripted reply the body is validated (``parse_chat_completion``): unknown top-level
fields are refused, as the OpenAI API does ("Unrecognized request argument supplied"); the
fields that have no meaning for a scripted reply (temperature, tools, ...) are accepted and
ignored. For an upstream, the body is forwarded as sent (``parse_proxy_request``): only
what tokenstream itself needs is checked, and the ``tokenstream`` object (pacing) is taken
out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenstream.dialects.content import ContentPart, text_of
from tokenstream.dialects.overrides import (
    NO_OVERRIDES,
    PacingOverrides,
    parse_overrides,
    validated,
    validated_json,
)
from tokenstream.engine.events import ToolCall
from tokenstream.engine.messages import ChatMessage, ToolSpec
from tokenstream.errors import InvalidRequest

__all__ = [
    "ChatCompletionRequest",
    "ProxyRequest",
    "parse_chat_completion",
    "parse_proxy_request",
]


class _Function(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str = ""


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: _Function


class _FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters or {})


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # refusal, audio, ... are carried along
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[_ToolCall] | None = None

    def text(self) -> str:
        return text_of(self.content)

    def chat_message(self) -> ChatMessage:
        calls = tuple(
            ToolCall(call.id, call.function.name, call.function.arguments, number)
            for number, call in enumerate(self.tool_calls or ())
        )
        return ChatMessage(self.role, self.text(), self.name, self.tool_call_id, calls)


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
    tools: tuple[ToolSpec, ...] = ()


def _tool_specs(tools: list[Any] | None) -> tuple[ToolSpec, ...]:
    """``tools`` in chat completions' shape, ``{"type": "function", "function": {name,
    description, parameters}}``; a tool of another type keeps only its type."""
    specs = []
    for number, tool in enumerate(tools or ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind != "function":
            specs.append(ToolSpec(kind, kind=kind))
            continue
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict):
            raise InvalidRequest(
                f"Invalid 'tools[{number}]': a function tool is {{\"type\": \"function\", "
                "\"function\": {\"name\": ..., \"parameters\": {...}}}.",
                param=f"tools[{number}]",
                code="invalid_value",
            )
        specs.append(validated(_FunctionTool, function, f"tools[{number}].function.").spec())
    return tuple(specs)


def parse_chat_completion(body: bytes) -> ChatCompletionRequest:
    parsed = validated_json(_ChatBody, body)
    if parsed.stream_options is not None and not parsed.stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    messages = [m.chat_message() for m in parsed.messages]
    return ChatCompletionRequest(
        model=parsed.model,
        messages=messages,
        stream=bool(parsed.stream),
        include_usage=bool(parsed.stream_options and parsed.stream_options.include_usage),
        max_tokens=parsed.max_completion_tokens or parsed.max_tokens,
        overrides=parsed.tokenstream or NO_OVERRIDES,
        tools=_tool_specs(parsed.tools),
    )


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    body: dict[str, Any]
    """What goes upstream."""
    model: str
    stream: bool
    include_usage: bool
    overrides: PacingOverrides
    raw: bytes | None = None
    """The client's own bytes, when ``body`` is them unchanged: sent as they came, so a long
    conversation is not encoded again on the way to the first token."""


def parse_proxy_request(raw: bytes, model_override: str | None) -> ProxyRequest:
    """Check only what tokenstream itself needs; the upstream judges the rest."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    except RecursionError:
        raise InvalidRequest(
            "The request body nests JSON too deeply to be read.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    # The client's bytes go upstream unchanged unless something in them is replaced. Not
    # with upstream.model: with a key given twice, another parser could take the other one.
    unchanged = (
        model_override is None
        and "tokenstream" not in body
        and raw.lstrip(b" \t\r\n")[:1] == b"{"  # UTF-8 without a byte order mark
    )
    overrides = parse_overrides(body.pop("tokenstream", None))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest(
            "Invalid value for 'stream': must be a boolean.", param="stream", code="invalid_value"
        )
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    if stream and body.get("n") not in (None, 1):
        raise InvalidRequest(
            "tokenstream re-paces one choice per reply: 'n' must be 1 when streaming.",
            param="n",
            code="invalid_value",
        )
    if model_override is not None:
        body["model"] = model_override
    model = body.get("model")
    return ProxyRequest(
        body=body,
        model=model if isinstance(model, str) else "",
        stream=bool(stream),
        include_usage=include_usage,
        overrides=overrides,
        raw=raw if unchanged else None,
    )
