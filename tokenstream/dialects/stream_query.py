"""``GET /v1/stream``: the EventSource and ``curl -N`` dialect.

The query names the prompt, what the reply is encoded in, and the pacing. The reply comes
in one of tokenstream's own formats (``format``) or in an API's dialect (``dialect``):

- ``format=text`` (the default): each piece as the event's data;
- ``format=json``: ``{"index", "token", "tokens"}`` per piece;
- ``format=openai``: ``chat.completion.chunk`` objects, the same as ``dialect=openai-chat``;
- ``dialect=NAME``: the events the dialect's own endpoint streams (``catalog.DIALECTS``), so
  that each API's raw events can be watched with ``curl -N`` or an ``EventSource``.

The two are alternatives: ``format`` with a ``dialect`` is refused, but for the one pair that
means the same (``openai`` and ``openai-chat``). In the text formats and OpenAI chunks, with
``event=``, every event has that event name; ``include_usage`` adds OpenAI's usage chunk. Any
other dialect names its own events and always reports usage, so ``event`` and
``include_usage`` are refused with it. Every event's ``id:`` is the runner's (``<stream
id>:<sequence>``, ``engine.streamlog``): an ``EventSource`` that reconnects resumes the
stream, or is told to stop once it has it all. ``text`` and ``json`` carry text only: tool
calls, reasoning and the like are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeGuard

from pydantic import Field

from tokenstream.dialects.catalog import DIALECTS, Dialect, EncoderOptions, PromptCounted
from tokenstream.dialects.framing import EventFraming, json_string
from tokenstream.dialects.overrides import (
    PACING_FIELDS,
    PacingOverrides,
    validated,
)
from tokenstream.engine.events import ReplyEncoder
from tokenstream.engine.tokenizer import Piece
from tokenstream.errors import InvalidRequest

__all__ = [
    "FormatName",
    "JsonFormat",
    "StreamRequest",
    "TextFormat",
    "encoder_for",
    "parse_stream_query",
    "prompt_counted",
]

FormatName = Literal["text", "json", "openai"]

_OPENAI_CHUNKS = "openai-chat"
"""The dialect ``format=openai`` names: OpenAI chunks, framed by tokenstream."""


class TextFormat(EventFraming):
    __slots__ = ()

    def piece(self, piece: Piece) -> bytes:
        return self.frame(piece.text)


class JsonFormat(EventFraming):
    __slots__ = ("_index",)

    def __init__(self, *, event: str | None, sentinel: str) -> None:
        super().__init__(event=event, sentinel=sentinel)
        self._index = 0

    def piece(self, piece: Piece) -> bytes:
        token = json_string(piece.text)
        data = f'{{"index":{self._index},"token":{token},"tokens":{piece.tokens}}}'
        self._index += 1
        return self.frame(data)


def encoder_for(query: StreamRequest, model: str, sentinel: str) -> ReplyEncoder:
    """The wire format a ``GET /v1/stream`` query asks for."""
    if query.dialect is None:
        kind = JsonFormat if query.format == "json" else TextFormat
        return kind(event=query.event, sentinel=sentinel)
    options = EncoderOptions(
        model=model,
        include_usage=query.include_usage,
        event=query.event,
        sentinel=sentinel,
    )
    return query.dialect.encoder(options)


def prompt_counted(encoder: ReplyEncoder) -> PromptCounted | None:
    """The encoder (of ``encoder_for``) that wants the prompt's token count, if it does."""
    return encoder if _counts_prompt(encoder) else None


def _counts_prompt(encoder: ReplyEncoder) -> TypeGuard[PromptCounted]:
    # not isinstance with a runtime-checkable Protocol: on Python 3.11 that walks the
    # protocol's attributes on every call, tens of microseconds of every stream's start
    return hasattr(encoder, "input_tokens")


class _StreamQuery(PacingOverrides):
    """The query of ``GET /v1/stream``: the pacing overrides and the stream's own fields."""

    prompt: str = Field(max_length=1_000_000)
    format: FormatName | None = None
    dialect: str | None = Field(default=None, max_length=64)
    event: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[^\r\n]*$")
    model: str | None = Field(default=None, min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    include_usage: bool = False


@dataclass(frozen=True, slots=True)
class StreamRequest:
    prompt: str
    format: FormatName | None
    """``text``, ``json`` or ``openai`` (then ``dialect`` is openai-chat); None for another
    dialect."""
    dialect: Dialect | None
    """The API dialect the reply is encoded in; None for ``text`` and ``json``."""
    event: str | None
    model: str | None
    max_tokens: int | None
    include_usage: bool
    overrides: PacingOverrides


def _dialect_named(name: str) -> Dialect:
    dialect = DIALECTS.get(name)
    if dialect is None:
        accepted = ", ".join(f"'{known}'" for known in DIALECTS)
        raise InvalidRequest(
            f"Invalid value for 'dialect': {name!r} is not a dialect. Accepted values: "
            f"{accepted}.",
            param="dialect",
            code="invalid_value",
        )
    return dialect


def _refuse_with(param: str, dialect: Dialect, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"Parameter '{param}' cannot be used with dialect={dialect.name}: {why}",
        param=param,
        code="invalid_value",
    )


def _encoding(parsed: _StreamQuery) -> tuple[FormatName | None, Dialect | None]:
    """What the reply is encoded in: a format, or a dialect (checked against the format and
    the parameters that only some encodings have)."""
    if parsed.dialect is None:
        fmt: FormatName = parsed.format or "text"
        return fmt, DIALECTS[_OPENAI_CHUNKS] if fmt == "openai" else None
    dialect = _dialect_named(parsed.dialect)
    chunks = dialect.name == _OPENAI_CHUNKS
    if parsed.format is not None and not (parsed.format == "openai" and chunks):
        raise _refuse_with(
            "format", dialect,
            "the dialect's own events are the format. Give 'format' (text, json or openai) "
            "or 'dialect', not both.",
        )
    if not dialect.custom_framing:
        own_events = "its API names its own events."
        for param, why in (("event", own_events), ("include_usage", "it always sends usage.")):
            if param in parsed.model_fields_set:
                raise _refuse_with(param, dialect, why + " The parameter applies to format=text, "
                                   "json and openai (dialect=openai-chat).")
    return ("openai" if chunks else None), dialect


_OVERRIDE_FIELDS = ("profile", "source", *PACING_FIELDS)


def parse_stream_query(query: Mapping[str, str], keys: list[str]) -> StreamRequest:
    """``keys`` is every key as sent, to refuse a parameter given twice."""
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise InvalidRequest(
                f"Parameter '{key}' is given more than once.", param=key, code="invalid_value"
            )
        seen.add(key)
    parsed = validated(_StreamQuery, dict(query))
    fmt, dialect = _encoding(parsed)
    given = parsed.model_fields_set
    overrides = PacingOverrides(
        **{name: getattr(parsed, name) for name in _OVERRIDE_FIELDS if name in given}
    )
    return StreamRequest(
        prompt=parsed.prompt,
        format=fmt,
        dialect=dialect,
        event=parsed.event,
        model=parsed.model,
        max_tokens=parsed.max_tokens,
        include_usage=parsed.include_usage,
        overrides=overrides,
    )
