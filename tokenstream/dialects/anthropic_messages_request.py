"""Anthropic Messages requests: the body of ``POST /v1/messages`` as a neutral
``MessagesRequest`` (``parse_messages``).

Anthropic's body (``model``, ``messages``, ``max_tokens`` required as Anthropic requires it,
``system`` as a string or text blocks, ``stream``); unknown fields are refused, and fields
that have no meaning for a scripted reply (``temperature``, ``tools``, ``tool_choice``,
``thinking``, ...) are accepted and ignored. A user message's ``tool_result`` blocks become
``tool`` messages (one each, ``tool_call_id`` their ``tool_use_id``), its text a user
message after them; an assistant message's ``tool_use`` and ``thinking`` blocks are
accepted and leave its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from tokenstream.dialects.content import ContentPart, text_of
from tokenstream.dialects.framing import dumps
from tokenstream.dialects.overrides import NO_OVERRIDES, PacingOverrides, validated, validated_json
from tokenstream.engine.events import ToolCall
from tokenstream.engine.messages import ChatMessage, ToolSpec

__all__ = [
    "MessagesRequest",
    "parse_messages",
]


def _as_blocks(content: Any) -> Any:
    """A string is short for one text block (and errors then name the block's field, not a
    branch of a union)."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


class _ToolResultBlock(BaseModel):
    model_config = ConfigDict(extra="allow")  # is_error, cache_control
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: Annotated[list[ContentPart], BeforeValidator(_as_blocks)] = []


class _ToolUseBlock(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


def _block_kind(block: Any) -> str:
    kind = block.get("type") if isinstance(block, dict) else getattr(block, "type", None)
    return kind if kind in ("tool_result", "tool_use") else "other"


_Block = Annotated[
    Annotated[_ToolResultBlock, Tag("tool_result")]
    | Annotated[_ToolUseBlock, Tag("tool_use")]
    | Annotated[ContentPart, Tag("other")],  # text, image, thinking, ...
    Discriminator(_block_kind),
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: Annotated[list[_Block], BeforeValidator(_as_blocks)]

    @model_validator(mode="after")
    def _tool_blocks_on_their_side(self) -> _Message:
        misplaced = "tool_result" if self.role == "assistant" else "tool_use"
        if any(block.type == misplaced for block in self.content):
            raise ValueError(f"{misplaced} blocks are not allowed in {self.role} messages")
        return self

    def chat_messages(self) -> list[ChatMessage]:
        """A user message's tool results (one ``tool`` message each), then its text; an
        assistant message's text with its ``tool_use`` blocks as its calls."""
        results = [
            ChatMessage("tool", text_of(block.content), tool_call_id=block.tool_use_id)
            for block in self.content
            if isinstance(block, _ToolResultBlock)
        ]
        text = "".join(
            block.text or ""
            for block in self.content
            if isinstance(block, ContentPart) and block.type == "text"
        )
        if results and not text:
            return results
        uses = [block for block in self.content if isinstance(block, _ToolUseBlock)]
        calls = tuple(
            ToolCall(block.id, block.name, dumps(block.input), number)
            for number, block in enumerate(uses)
        )
        return [*results, ChatMessage(self.role, text, tool_calls=calls)]


class _CustomTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: str | None = None
    input_schema: dict[str, Any]


def _tool_spec(number: int, tool: dict[str, Any]) -> ToolSpec:
    """A tool of Anthropic's: ``{name, description, input_schema}``, or a built-in one (with
    a ``type`` such as ``web_search_20250305``)."""
    kind = tool.get("type")
    if isinstance(kind, str) and kind != "custom":
        return ToolSpec(str(tool.get("name") or kind), kind=kind)
    parsed = validated(_CustomTool, tool, f"tools.{number}.")
    return ToolSpec(parsed.name, parsed.description, parsed.input_schema)


class _MessagesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    messages: list[_Message] = Field(min_length=1, max_length=10_000)
    max_tokens: int = Field(ge=1, le=1_000_000)
    system: str | list[ContentPart] | None = None
    stream: bool = False
    tokenstream: PacingOverrides | None = None

    # Accepted for compatibility, without effect on a scripted reply.
    metadata: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    thinking: Any = None
    service_tier: str | None = None


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    model: str
    messages: list[ChatMessage]
    max_tokens: int
    stream: bool
    overrides: PacingOverrides
    tools: tuple[ToolSpec, ...] = ()


def parse_messages(body: bytes) -> MessagesRequest:
    parsed = validated_json(_MessagesBody, body)
    messages = [ChatMessage("system", text_of(parsed.system))] if parsed.system else []
    for message in parsed.messages:
        messages += message.chat_messages()
    return MessagesRequest(
        model=parsed.model,
        messages=messages,
        max_tokens=parsed.max_tokens,
        stream=parsed.stream,
        overrides=parsed.tokenstream or NO_OVERRIDES,
        tools=tuple(_tool_spec(number, tool) for number, tool in enumerate(parsed.tools or ())),
    )
