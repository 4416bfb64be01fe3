"""OpenAI Responses output: the output items and the ``response`` object as the stream's
events carry them, and a whole (not streamed) reply's body (``response_body``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

from tokenstream.engine.events import ReplyContent, Usage

__all__ = [
    "function_call_item",
    "message_item",
    "new_call_id",
    "new_item_id",
    "new_message_item_id",
    "new_response_id",
    "reasoning_item",
    "response_body",
    "response_object",
]


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{random.getrandbits(160):040x}"


def new_response_id() -> str:
    return new_item_id("resp")


def new_message_item_id() -> str:
    return new_item_id("msg")


def new_call_id() -> str:
    return f"call_{random.getrandbits(96):024x}"


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """The output message: in progress (``text`` None) or done with ``text``."""
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"id": item_id, "type": "message", "status": "in_progress" if text is None else status,
            "role": "assistant", "content": content}


def reasoning_item(item_id: str, summary: str | None) -> dict[str, Any]:
    """A reasoning item: in progress (``summary`` None) or done with its summary text."""
    parts = [{"type": "summary_text", "text": summary}] if summary else []
    return {"id": item_id, "type": "reasoning", "summary": parts}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
            "call_id": call_id, "name": name}


def _usage(usage: Usage) -> dict[str, Any]:
    """Usage in the Responses shape; the details an upstream gave (in chat completions'
    words) kept, else 0."""
    raw: Mapping[str, Any] = usage.raw or {}
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {
            "reasoning_tokens": completion_details.get("reasoning_tokens") or 0
        },
        "total_tokens": usage.total_tokens,
    }


def response_object(
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    truncated: bool = False,
) -> dict[str, Any]:
    """The ``response`` object, as the events and a whole reply carry it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None if usage is None else _usage(usage),
    }


def response_body(model: str, content: ReplyContent, usage: Usage) -> dict[str, Any]:
    """A whole (not streamed) reply: the final ``response``, its items reasoning, message,
    then the function calls; cut by ``max_output_tokens``, incomplete and its last item
    too."""
    truncated = content.finish_reason == "length"
    output: list[dict[str, Any]] = []
    if content.reasoning:
        output.append(reasoning_item(new_item_id("rs"), content.reasoning))
    if content.text or not content.tool_calls:
        output.append(message_item(new_message_item_id(), content.text))
    output += [
        function_call_item(new_item_id("fc"), call.call_id or new_call_id(), call.name,
                           call.arguments, "completed")
        for call in content.tool_calls
    ]
    if truncated and output[-1]["type"] != "reasoning":
        output[-1]["status"] = "incomplete"
    return response_object(
        response_id=new_response_id(),
        created_at=int(time.time()),
        model=content.model or model,
        status="incomplete" if truncated else "completed",
        output=output,
        usage=usage,
        truncated=truncated,
    )
