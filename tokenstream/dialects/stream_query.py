"""``GET /v1/stream``: the EventSource and ``curl -N`` dialect.

The query names the prompt, the format and the pacing; the reply comes in one of three
formats:

- ``text``: each piece as the event's data;
- ``json``: ``{"index", "token", "tokens"}`` per piece;
- ``openai``: ``chat.completion.chunk`` objects (``openai_chat.OpenAIChunkFormat``).

Every event has an ``id:`` (its number; ``done`` on the sentinel) and, with ``event=``, that
event name. ``text`` and ``json`` carry text only: tool calls, reasoning and the like are
left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationError

from tokenstream.dialects.framing import EventFraming, json_string
from tokenstream.dialects.openai_chat import OpenAIChunkFormat
from tokenstream.dialects.overrides import PACING_FIELDS, PacingOverrides, invalid_request
from tokenstream.engine.events import ReplyEncoder
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import InvalidRequest

__all__ = [
    "FormatName",
    "JsonFormat",
    "StreamRequest",
    "TextFormat",
    "encoder_for",
    "make_format",
    "parse_stream_query",
]

FormatName = Literal["text", "json", "openai"]


class TextFormat(EventFraming):
    __slots__ = ()

    def piece(self, piece: Piece) -> bytes:
        return self.frame(piece.text)


class JsonFormat(EventFraming):
    __slots__ = ("_index",)

    def __init__(self, *, event: str | None, with_ids: bool, sentinel: str) -> None:
        super().__init__(event=event, with_ids=with_ids, sentinel=sentinel)
        self._index = 0

    def piece(self, piece: Piece) -> bytes:
        token = json_string(piece.text)
        data = f'{{"index":{self._index},"token":{token},"tokens":{piece.tokens}}}'
        self._index += 1
        return self.frame(data)


def make_format(
    name: FormatName,
    *,
    model: str,
    include_usage: bool = False,
    event: str | None = None,
    with_ids: bool = True,
    sentinel: str = "[DONE]",
) -> ReplyEncoder:
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


def encoder_for(query: StreamRequest, model: str, sentinel: str) -> ReplyEncoder:
    """The wire format a ``GET /v1/stream`` query asks for."""
    return make_format(
        query.format,
        model=model,
        include_usage=query.include_usage,
        event=query.event,
        sentinel=sentinel,
    )


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
        raise invalid_request(exc) from None
    overrides = PacingOverrides(
        **{
            name: getattr(parsed, name)
            for name in ("profile", "source", *PACING_FIELDS)
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
