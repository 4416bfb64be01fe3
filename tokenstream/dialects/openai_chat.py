"""OpenAI chat completions: ``POST /v1/chat/completions``, streamed and whole.

Requests are parsed in ``openai_chat_request`` (``parse_chat_completion`` for a scripted
reply, ``parse_proxy_request`` for an upstream; both importable from here too).

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

import random
import time
from typing import Any

from tokenstream.dialects.framing import EventFraming, dumps, json_string
from tokenstream.dialects.openai_chat_request import (
    ChatCompletionRequest,
    ProxyRequest,
    parse_chat_completion,
    parse_proxy_request,
)
from tokenstream.engine.events import (
    Finish,
    ModelName,
    Passthrough,
    ReasoningDelta,
    ReplyContent,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.tokenizer import Piece

__all__ = [
    "ChatCompletionRequest",
    "OpenAIChunkFormat",
    "ProxyRequest",
    "completion_body",
    "new_completion_id",
    "parse_chat_completion",
    "parse_proxy_request",
]


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
        sentinel: str = "[DONE]",
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        super().__init__(event=event, sentinel=sentinel)
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
            f'{{"id":{json_string(self.completion_id)},"object":"chat.completion.chunk",'
            f'"created":{self.created},"model":{json_string(model)},'
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
