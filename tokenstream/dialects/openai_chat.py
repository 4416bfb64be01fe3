"""OpenAI chat completions: ``POST /v1/chat/completions``, streamed and whole.

Requests: the OpenAI body, validated (``parse_chat_completion``): unknown top-level fields
are refused, as the OpenAI API does ("Unrecognized request argument supplied"); the fields
that have no meaning for a scripted reply (temperature, tools, ...) are accepted and
ignored. For an upstream, the body is forwarded as sent (``parse_proxy_request``): only
what tokenstream itself needs is checked, and the ``tokenstream`` object (pacing) is taken
out.

Replies: ``chat.completion.chunk`` objects as the OpenAI API streams them
(``OpenAIChunkFormat``). One id and ``created`` for the whole stream; the first chunk
carries ``delta.role``; content chunks; a chunk with ``finish_reason``; with
``include_usage`` a last chunk with ``choices: []`` and the usage (every other chunk then
has ``"usage": null``, as OpenAI does); then ``data: [DONE]``. Reasoning is sent as
``delta.reasoning_content`` (as vLLM and DeepSeek do), tool calls as ``delta.tool_calls``,
and ``Passthrough`` fields unchanged. A whole reply is one ``chat.completion`` object
(``completion_body``).

Chunk JSON for the hot path is built from a per-stream prefix and suffix around the one
value that changes (the piece text), instead of ``json.dumps`` of a whole dict per token.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenstream.dialects.content import ContentPart, text_of
from tokenstream.dialects.framing import EventFraming, dumps, json_string
from tokenstream.dialects.overrides import (
    NO_OVERRIDES,
    PacingOverrides,
    parse_overrides,
    validated,
    validated_json,
)
from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReasoningDelta,
    ReplyContent,
    ReplyEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.messages import ChatMessage, ToolSpec
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import InvalidRequest

__all__ = [
    "ChatCompletionRequest",
    "OpenAIChunkFormat",
    "ProxyRequest",
    "completion_body",
    "new_completion_id",
    "parse_chat_completion",
    "parse_proxy_request",
]


# -- requests ------------------------------------------------------------------------------


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



# -- replies -------------------------------------------------------------------------------


def new_completion_id() -> str:
    """A ``chatcmpl-`` id as OpenAI's look: 24 hex digits."""
    # an identifier, not a secret: the random module is enough, and cheaper than ``uuid4``
    # (a system call per stream)
    return f"chatcmpl-{random.getrandbits(96):024x}"


_CONTENT_OPEN = '{"index":0,"delta":{"content":'


class OpenAIChunkFormat(EventFraming):
    __slots__ = ("_content_head", "_content_tail", "_role_sent", "_tail", "completion_id",
                 "created", "include_usage", "model")
    # _content_head, _content_tail: the chunk JSON around a piece's text, as UTF-8

    def __init__(
        self,
        *,
        model: str,
        include_usage: bool,
        event: str | None = None,
        with_ids: bool = False,
        sentinel: str = "[DONE]",
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        super().__init__(event=event, with_ids=with_ids, sentinel=sentinel)
        self.completion_id = completion_id or new_completion_id()
        self.created = int(time.time()) if created is None else created
        self.include_usage = include_usage
        self._tail = ',"usage":null}' if include_usage else "}"
        self._content_tail = (
            '},"logprobs":null,"finish_reason":null}]' + self._tail
        ).encode()
        self._set_model(model)
        self._role_sent = False

    def _set_model(self, model: str) -> None:
        self.model = model
        head = (
            f'{{"id":{dumps(self.completion_id)},"object":"chat.completion.chunk",'
            f'"created":{self.created},"model":{dumps(model)},'
            f'"system_fingerprint":"fp_tokenstream","choices":['
        )
        # only the content head is kept (an open stream holds it); ``_head`` is cut from it
        self._content_head = (head + _CONTENT_OPEN).encode()

    @property
    def _head(self) -> str:
        return self._content_head[: -len(_CONTENT_OPEN)].decode()

    def _role_chunk(self) -> bytes:
        self._role_sent = True
        return self.frame(
            self._head + '{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
            '"logprobs":null,"finish_reason":null}]' + self._tail
        )

    def piece(self, piece: Piece) -> bytes:
        role = b"" if self._role_sent else self._role_chunk()
        return role + self.frame_json(
            self._content_head, json_string(piece.text), self._content_tail
        )

    def _first_or_delta(self, delta: dict[str, Any]) -> bytes:
        """A chunk with ``delta``; a reply that begins with it (not with text) has the role in
        the same chunk and ``content: null``, as OpenAI sends a reply that begins with a tool
        call."""
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", "content": None, **delta, "refusal": None}
        return self._delta_chunk(dumps(delta))

    def _delta_chunk(self, delta: str, finish_reason: str = "null") -> bytes:
        """A chunk of choice 0 with ``delta`` (JSON text), after the role chunk if not sent."""
        role = b"" if self._role_sent else self._role_chunk()
        return role + self.frame(
            self._head + f'{{"index":0,"delta":{delta},"logprobs":null,'
            f'"finish_reason":{finish_reason}}}]' + self._tail
        )

    def event(self, event: ReplyEvent) -> bytes:
        if isinstance(event, Finish):
            return self._delta_chunk("{}", dumps(event.reason))
        if isinstance(event, Usage):
            if not self.include_usage:
                return b""
            return self.frame(self._head + "]," + f'"usage":{dumps(event.to_dict())}}}')
        if isinstance(event, ModelName):
            if event.name != self.model:
                self._set_model(event.name)
            return b""
        if isinstance(event, TextDelta):
            return self.piece(Piece(event.text))
        if isinstance(event, ReasoningDelta):
            return self._first_or_delta({"reasoning_content": event.text})
        if isinstance(event, ToolCallStart):
            call = {
                "index": event.index,
                "id": event.call_id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._first_or_delta({"tool_calls": [call]})
        if isinstance(event, ToolCallDelta):
            call = {"index": event.index, "function": {"arguments": event.arguments}}
            return self._delta_chunk(dumps({"tool_calls": [call]}))
        if isinstance(event, Passthrough):
            return self._delta_chunk(dumps(dict(event.delta)))
        return b""  # ToolCallEnd: OpenAI streams have no event for it


def completion_body(model: str, content: ReplyContent, usage: Usage) -> dict[str, Any]:
    """A whole (``stream: false``) reply: one ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": content.text, "refusal": None}
    if content.reasoning:
        message["reasoning_content"] = content.reasoning
    if content.tool_calls:
        message["content"] = content.text or None
        message["tool_calls"] = [
            {"id": call.call_id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in content.tool_calls
        ]
    return {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_tokenstream",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": content.finish_reason,
            }
        ],
        "usage": usage.to_dict(),
    }
