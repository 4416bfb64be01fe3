"""A request for an upstream of another dialect than the client's, built from the neutral
``Conversation`` (``engine.messages``): what each API streams a reply for.

What is carried: the model, the system prompt (chat: ``system`` messages; Responses:
``instructions``; Anthropic: ``system``), the messages' text, the assistant's tool calls and
the tools' results, the reply's token limit (Anthropic requires one:
``ANTHROPIC_MAX_TOKENS`` when the client gave none) and the function tools. Images and other
non-text content, sampling settings and ``tool_choice`` are not; a built-in tool
(``web_search``, ...) is refused (400), having no equivalent in another API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tokenstream.config import UpstreamDialect
from tokenstream.engine.messages import ChatMessage, Conversation, ToolSpec
from tokenstream.errors import InvalidRequest

__all__ = [
    "ANTHROPIC_MAX_TOKENS",
    "anthropic_body",
    "chat_completions_body",
    "responses_body",
    "upstream_body",
]

ANTHROPIC_MAX_TOKENS = 4096
"""``max_tokens`` of a request to an Anthropic upstream whose client set no limit."""

_SYSTEM_ROLES = frozenset({"system", "developer"})


def upstream_body(
    dialect: UpstreamDialect, conversation: Conversation, *, include_usage: bool = True
) -> dict[str, Any]:
    """A streaming request in ``dialect``; ``include_usage``: chat completions' usage chunk."""
    _check_tools(conversation.tools, dialect)
    if dialect == "anthropic":
        return anthropic_body(conversation)
    if dialect == "openai-responses":
        return responses_body(conversation)
    return chat_completions_body(conversation, include_usage=include_usage)


def _check_tools(tools: Sequence[ToolSpec], dialect: UpstreamDialect) -> None:
    for number, tool in enumerate(tools):
        if tool.kind != "function":
            raise InvalidRequest(
                f"The tool tools[{number}] is a built-in '{tool.kind}' tool, which the "
                f"upstream ({dialect}) does not have: only function tools are translated for "
                "an upstream of another API.",
                param=f"tools[{number}]",
                code="unsupported_tool",
            )


def _system_text(messages: Sequence[ChatMessage]) -> str:
    return "\n\n".join(m.content for m in messages if m.role in _SYSTEM_ROLES and m.content)


# -- OpenAI chat completions ---------------------------------------------------------------


def chat_completions_body(
    conversation: Conversation, *, include_usage: bool = True
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": conversation.model,
        "messages": [_chat_message(message) for message in conversation.messages],
        "stream": True,
    }
    if conversation.max_tokens is not None:
        body["max_tokens"] = conversation.max_tokens
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    if conversation.tools:
        body["tools"] = [
            {"type": "function", "function": _function(tool, "parameters")}
            for tool in conversation.tools
        ]
    return body


def _chat_message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "",
                "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {"id": call.call_id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    return out


def _function(tool: ToolSpec, schema_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out[schema_key] = dict(tool.parameters) or {"type": "object", "properties": {}}
    return out


# -- OpenAI Responses ----------------------------------------------------------------------


def responses_body(conversation: Conversation) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for message in conversation.messages:
        if message.role in _SYSTEM_ROLES:
            continue
        if message.role == "tool":
            items.append({"type": "function_call_output", "call_id": message.tool_call_id or "",
                          "output": message.content})
            continue
        if message.content or not message.tool_calls:
            role = "assistant" if message.role == "assistant" else "user"
            items.append({"type": "message", "role": role, "content": message.content})
        items += [
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments}
            for call in message.tool_calls
        ]
    body: dict[str, Any] = {"model": conversation.model, "input": items, "stream": True}
    instructions = _system_text(conversation.messages)
    if instructions:
        body["instructions"] = instructions
    if conversation.max_tokens is not None:
        body["max_output_tokens"] = conversation.max_tokens
    if conversation.tools:
        body["tools"] = [
            {"type": "function", **_function(tool, "parameters")} for tool in conversation.tools
        ]
    return body


# -- Anthropic Messages --------------------------------------------------------------------


def anthropic_body(conversation: Conversation) -> dict[str, Any]:
    """Consecutive messages of one role are one turn (a turn's tool results go in one user
    message, as Anthropic requires)."""
    turns: list[dict[str, Any]] = []
    for message in conversation.messages:
        if message.role in _SYSTEM_ROLES:
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _anthropic_blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": conversation.model,
        "max_tokens": conversation.max_tokens or ANTHROPIC_MAX_TOKENS,
        "messages": turns,
        "stream": True,
    }
    system = _system_text(conversation.messages)
    if system:
        body["system"] = system
    if conversation.tools:
        body["tools"] = [_function(tool, "input_schema") for tool in conversation.tools]
    return body


def _anthropic_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id or "",
                 "content": message.content}]
    # Anthropic refuses an empty text block
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": message.content}] if message.content else []
    )
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.call_id, "name": call.name,
                       "input": _tool_input(call.name, call.arguments)})
    return blocks


def _tool_input(name: str, arguments: str) -> dict[str, Any]:
    """A call's JSON arguments as the object Anthropic's ``tool_use.input`` is."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"The arguments of the tool call to '{name}' are not a JSON object, which an "
            "Anthropic upstream requires.",
            param="messages",
            code="invalid_value",
        )
    return value
