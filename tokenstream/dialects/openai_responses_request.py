"""OpenAI Responses requests: the body of ``POST /v1/responses`` as a neutral
``ResponsesRequest`` (``parse_responses``).

``model``, ``input`` (a string, or a list of input items), ``instructions``,
``max_output_tokens``, ``stream``; unknown fields are refused, and those without meaning for
a scripted reply (``temperature``, ``tools``, ``reasoning``, ...) are accepted and ignored.
Input items: messages (``type`` ``message`` or left out; ``content`` a string or
``input_text``/``output_text`` parts), ``function_call_output`` (a ``tool`` message,
``tool_call_id`` its ``call_id``), and the model's own earlier ``function_call`` and
``reasoning`` items as clients send them back (accepted; they add no text).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from tokenstream.dialects.content import ContentPart, text_of
from tokenstream.dialects.overrides import NO_OVERRIDES, PacingOverrides, validated, validated_json
from tokenstream.engine.events import ToolCall
from tokenstream.engine.messages import ChatMessage, ToolSpec

__all__ = [
    "ResponsesRequest",
    "parse_responses",
]


def _as_parts(content: Any) -> Any:
    """A string is short for one text part (and errors then name the part's field, not a
    branch of a union)."""
    return [{"type": "input_text", "text": content}] if isinstance(content, str) else content


_Parts = Annotated[list[ContentPart], BeforeValidator(_as_parts)]


class _MessageItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, status
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: _Parts

    def chat_message(self) -> ChatMessage:
        return ChatMessage(self.role, text_of(self.content, ("input_text", "output_text")))


class _FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, status
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: _Parts

    def chat_message(self) -> ChatMessage:
        return ChatMessage("tool", text_of(self.output, ("input_text",)), tool_call_id=self.call_id)


class _FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, status
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class _ReasoningItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, content, encrypted_content, status
    type: Literal["reasoning"]
    summary: list[ContentPart]


def _item_type(item: Any) -> str | None:
    if isinstance(item, dict):
        kind = item.get("type", "message")  # a message may leave its type out
        return kind if isinstance(kind, str) else None
    return getattr(item, "type", None)


def _as_input_items(value: Any) -> Any:
    """A string is short for one user message."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


_InputItem = Annotated[
    Annotated[_MessageItem, Tag("message")]
    | Annotated[_FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[_FunctionCallItem, Tag("function_call")]
    | Annotated[_ReasoningItem, Tag("reasoning")],
    Discriminator(_item_type),
]


class _ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    input: Annotated[list[_InputItem], BeforeValidator(_as_input_items)]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    stream: bool = False
    tokenstream: PacingOverrides | None = None

    # Accepted for compatibility, without effect on a scripted reply.
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    reasoning: Any = None
    text: Any = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    user: str | None = None
    previous_response_id: str | None = None
    truncation: str | None = None
    include: list[str] | None = None
    service_tier: str | None = None


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    model: str
    messages: list[ChatMessage]
    max_output_tokens: int | None
    stream: bool
    overrides: PacingOverrides
    tools: tuple[ToolSpec, ...] = ()


def parse_responses(body: bytes) -> ResponsesRequest:
    parsed = validated_json(_ResponsesBody, body)
    messages = [ChatMessage("system", parsed.instructions)] if parsed.instructions else []
    for item in parsed.input:
        _add_item(messages, item)
    return ResponsesRequest(
        model=parsed.model,
        messages=messages,
        max_output_tokens=parsed.max_output_tokens,
        stream=parsed.stream,
        overrides=parsed.tokenstream or NO_OVERRIDES,
        tools=tuple(_tool_spec(number, tool) for number, tool in enumerate(parsed.tools or ())),
    )


def _add_item(
    messages: list[ChatMessage],
    item: _MessageItem | _FunctionCallOutputItem | _FunctionCallItem | _ReasoningItem,
) -> None:
    """One input item as a neutral message: a function call joins the assistant message
    before it (the calls of one turn are one message), its output is a ``tool`` message;
    reasoning adds nothing."""
    if isinstance(item, _MessageItem | _FunctionCallOutputItem):
        messages.append(item.chat_message())
    elif isinstance(item, _FunctionCallItem):
        if not messages or messages[-1].role != "assistant":
            messages.append(ChatMessage("assistant", ""))
        made = messages[-1].tool_calls
        call = ToolCall(item.call_id, item.name, item.arguments, len(made))
        messages[-1] = replace(messages[-1], tool_calls=(*made, call))


class _FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


def _tool_spec(number: int, tool: dict[str, Any]) -> ToolSpec:
    """A function tool (``{"type": "function", name, description, parameters}``), or a
    built-in one (``web_search``, ``file_search``, ...) by its type."""
    kind = tool.get("type")
    if isinstance(kind, str) and kind != "function":
        return ToolSpec(kind, kind=kind)
    parsed = validated(_FunctionTool, tool, f"tools[{number}].")
    return ToolSpec(parsed.name, parsed.description, parsed.parameters or {})
