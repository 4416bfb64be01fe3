"""Wire format stage: pieces -> SSE event bytes.

Three formats, one interface (``WireFormat``):

- ``openai``: ``chat.completion.chunk`` objects as the OpenAI API streams them. One id and
  ``created`` for the whole stream; the first chunk carries ``delta.role``; content chunks;
  a final chunk with ``finish_reason``; with ``include_usage`` a last chunk with
  ``choices: []`` and the usage (every other chunk then has ``"usage": null``, as OpenAI does).
- ``text``: each piece as the event's data.
- ``json``: ``{"index", "token", "tokens"}`` per piece.

Every stream ends with the sentinel event (``data: [DONE]`` unless configured otherwise).
An error after the stream started is sent as ``data: {"error": {...}}`` and then the sentinel.

A proxied reply also carries ``Passthrough`` events (tool call deltas, refusal, finish
reason, usage, the upstream's model). ``openai`` forwards them as chunks, unchanged and in
order; ``text`` and ``json`` carry text only and leave them out.

Chunk JSON for the hot path is built from a per-stream prefix and suffix around the one
value that changes (the piece text), instead of ``json.dumps`` of a whole dict per token.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, Literal, Protocol

from tokenstream.engine.events import Passthrough
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import error_body
from tokenstream.sse.encoder import encode_event

__all__ = [
    "FORMATS",
    "FinishReason",
    "JsonFormat",
    "OpenAIChunkFormat",
    "TextFormat",
    "Usage",
    "WireFormat",
    "make_format",
    "new_completion_id",
]

FinishReason = Literal["stop", "length"]
FormatName = Literal["text", "json", "openai"]
FORMATS: tuple[FormatName, ...] = ("text", "json", "openai")


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# What ``_dumps`` makes of a str, without building a JSONEncoder per call (10x faster).
_json_string: Callable[[str], str] = encode_basestring


class WireFormat(Protocol):
    def piece(self, piece: Piece) -> bytes:
        """The event(s) for one piece of reply text."""

    def finish(self, reason: FinishReason, usage: Usage | None) -> bytes:
        """Closing events, ending with the sentinel."""

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        """An error event in the OpenAI shape, then the sentinel."""

    def passthrough(self, item: Passthrough) -> bytes:
        """The event(s) for what a proxied chunk carries besides text; may be empty."""

    def done(self) -> bytes:
        """The sentinel alone: the end of a proxied stream, whose finish came from upstream."""


class _EventFraming:
    """Event name and ``id:`` numbering shared by the formats."""

    # slots throughout: one format object lives as long as its stream
    __slots__ = ("_event_line", "event", "events_sent", "sentinel", "with_ids")

    def __init__(self, *, event: str | None, with_ids: bool, sentinel: str) -> None:
        self.event = event
        self.with_ids = with_ids
        self.sentinel = sentinel
        self.events_sent = 0
        # checked by the encoder once, here; ``frame_json`` reuses it for every event
        self._event_line = encode_event(event=event)[:-1] if event is not None else b""

    def frame(self, data: str) -> bytes:
        self.events_sent += 1
        event_id = str(self.events_sent) if self.with_ids else None
        return encode_event(data, event=self.event, id=event_id)

    def frame_json(self, head: bytes, value: str, tail: bytes) -> bytes:
        """``frame(head + value + tail)`` for JSON data, whose text is one line (JSON escapes
        line breaks), so it is framed without looking for any: the hot path of ``openai``."""
        self.events_sent += 1
        id_line = b"id: %d\n" % self.events_sent if self.with_ids else b""
        return b"".join(
            (self._event_line, id_line, b"data: ", head, value.encode(), tail, b"\n\n")
        )

    def done(self) -> bytes:
        # the id "done" lets /v1/stream answer an EventSource reconnect with 204 (stop)
        return encode_event(self.sentinel, event=self.event, id="done" if self.with_ids else None)

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        return self.frame(_dumps(error_body(message, error_type, None, code))) + self.done()

    def passthrough(self, item: Passthrough) -> bytes:
        return b""


class TextFormat(_EventFraming):
    __slots__ = ()

    def piece(self, piece: Piece) -> bytes:
        return self.frame(piece.text)

    def finish(self, reason: FinishReason, usage: Usage | None) -> bytes:
        return self.done()


class JsonFormat(_EventFraming):
    __slots__ = ("_index",)

    def __init__(self, *, event: str | None, with_ids: bool, sentinel: str) -> None:
        super().__init__(event=event, with_ids=with_ids, sentinel=sentinel)
        self._index = 0

    def piece(self, piece: Piece) -> bytes:
        token = _json_string(piece.text)
        data = f'{{"index":{self._index},"token":{token},"tokens":{piece.tokens}}}'
        self._index += 1
        return self.frame(data)

    def finish(self, reason: FinishReason, usage: Usage | None) -> bytes:
        return self.done()


def new_completion_id() -> str:
    """A ``chatcmpl-`` id as OpenAI's look: 24 hex digits."""
    # an identifier, not a secret: the random module is enough, and cheaper than ``uuid4``
    # (a system call per stream)
    return f"chatcmpl-{random.getrandbits(96):024x}"


_CONTENT_OPEN = '{"index":0,"delta":{"content":'


class OpenAIChunkFormat(_EventFraming):
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
            f'{{"id":{_dumps(self.completion_id)},"object":"chat.completion.chunk",'
            f'"created":{self.created},"model":{_dumps(model)},'
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
            self._content_head, _json_string(piece.text), self._content_tail
        )

    def finish(self, reason: FinishReason, usage: Usage | None) -> bytes:
        out = b"" if self._role_sent else self._role_chunk()
        out += self.frame(
            self._head + f'{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{reason}"}}]'
            + self._tail
        )
        if self.include_usage and usage is not None:
            out += self.frame(self._head + "]," + f'"usage":{_dumps(usage.to_dict())}}}')
        return out + self.done()

    def passthrough(self, item: Passthrough) -> bytes:
        if item.model is not None and item.model != self.model:
            self._set_model(item.model)
        out = b""
        if item.delta or item.finish_reason is not None:
            if not self._role_sent:
                out += self._role_chunk()
            out += self.frame(
                self._head + f'{{"index":0,"delta":{_dumps(dict(item.delta or {}))},'
                f'"logprobs":null,"finish_reason":{_dumps(item.finish_reason)}}}]' + self._tail
            )
        if item.usage is not None:
            out += self.frame(self._head + "]," + f'"usage":{_dumps(dict(item.usage))}}}')
        return out


def make_format(
    name: FormatName,
    *,
    model: str,
    include_usage: bool = False,
    event: str | None = None,
    with_ids: bool = False,
    sentinel: str = "[DONE]",
) -> WireFormat:
    if name == "openai":
        return OpenAIChunkFormat(
            model=model,
            include_usage=include_usage,
            event=event,
            with_ids=with_ids,
            sentinel=sentinel,
        )
    if name == "json":
        return JsonFormat(event=event, with_ids=with_ids, sentinel=sentinel)
    return TextFormat(event=event, with_ids=with_ids, sentinel=sentinel)
