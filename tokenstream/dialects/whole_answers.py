"""Whole (not streamed) answers built from a reply's events added up (``ReplyContent``), in
each client dialect: for a request answered by an upstream of another dialect, whose reply
is read as a stream and given whole.

Text, tool calls, the finish reason and the usage in every dialect; reasoning as chat
completions' ``reasoning_content`` and as a Responses ``reasoning`` item (an Anthropic
``thinking`` block needs a signature only Anthropic can make: left out).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from tokenstream.dialects.anthropic_messages import message_body
from tokenstream.dialects.openai_chat import completion_body
from tokenstream.dialects.openai_responses import (
    message_item,
    new_message_item_id,
    new_response_id,
    response_object,
)
from tokenstream.engine.events import ReplyContent, Usage

__all__ = ["chat_completion_answer", "message_answer", "response_answer"]


def chat_completion_answer(model: str, content: ReplyContent, usage: Usage) -> dict[str, Any]:
    body = completion_body(model, content.text, content.finish_reason, usage)
    message = body["choices"][0]["message"]
    if content.reasoning:
        message["reasoning_content"] = content.reasoning
    if content.tool_calls:
        message["content"] = content.text or None
        message["tool_calls"] = [
            {"id": call.call_id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in content.tool_calls
        ]
    return body


def message_answer(model: str, content: ReplyContent, usage: Usage) -> dict[str, Any]:
    body = message_body(model, content.text, content.finish_reason, usage)
    body["content"] += [
        {"type": "tool_use", "id": call.call_id, "name": call.name,
         "input": _arguments_object(call.arguments)}
        for call in content.tool_calls
    ]
    return body


def response_answer(model: str, content: ReplyContent, usage: Usage) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if content.reasoning:
        output.append({
            "id": f"rs_{random.getrandbits(160):040x}", "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": content.reasoning}],
            "status": "completed",
        })
    if content.text or not content.tool_calls:
        output.append(message_item(new_message_item_id(), content.text))
    output += [
        {"id": f"fc_{random.getrandbits(160):040x}", "type": "function_call",
         "call_id": call.call_id, "name": call.name, "arguments": call.arguments,
         "status": "completed"}
        for call in content.tool_calls
    ]
    truncated = content.finish_reason == "length"
    return response_object(
        response_id=new_response_id(),
        created_at=int(time.time()),
        model=model,
        status="incomplete" if truncated else "completed",
        output=output,
        usage=usage,
        truncated=truncated,
    )


def _arguments_object(arguments: str) -> Any:
    """A call's JSON arguments as ``tool_use.input``: the object, or ``{}`` when the reply
    gave none (or was cut off in the middle of them)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
