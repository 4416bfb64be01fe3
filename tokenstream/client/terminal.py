"""How a reply looks in a terminal: its text typed out on stdout as it arrives; reasoning
and tool calls on stderr beside it, so that stdout holds the reply text alone."""

from __future__ import annotations

from collections.abc import Callable

from tokenstream.engine.events import (
    ReasoningDelta,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tokenstream.sse.parser import ServerSentEvent

__all__ = ["TerminalView", "format_event"]


class TerminalView:
    def __init__(self, out: Callable[[str], None], aside: Callable[[str], None]) -> None:
        self._out = out
        self._aside = aside
        self._open: str | None = None  # the aside being written: "reasoning" or a tool call
        self._written = False

    def show(self, item: ReplyEvent) -> None:
        if isinstance(item, TextDelta):
            self.close()
            self._out(item.text)
            self._written = True
        elif isinstance(item, ReasoningDelta):
            self._begin("reasoning", "thinking: ")
            self._aside(item.text)
        elif isinstance(item, ToolCallStart):
            self._begin(f"call {item.index}", f"tool call {item.name} {item.call_id}: ")
        elif isinstance(item, ToolCallDelta):
            self._begin(f"call {item.index}", f"tool call {item.index} arguments: ")
            self._aside(item.arguments)
        elif isinstance(item, ToolCallEnd):
            self.close()

    def _begin(self, what: str, label: str) -> None:
        if self._open == what:
            return
        self.close()
        self._aside(("\n" if self._written else "") + label)
        self._open = what
        self._written = True

    def close(self) -> None:
        """End the aside being written (a line of its own)."""
        if self._open is not None:
            self._aside("\n")
            self._open = None


def format_event(event: ServerSentEvent) -> str:
    """An event as its SSE lines (the fields that reached the client)."""
    lines = [] if event.event == "message" else [f"event: {event.event}"]
    if event.id:
        lines.append(f"id: {event.id}")
    lines += [f"data: {line}" for line in event.data.split("\n")]
    return "\n".join(lines) + "\n\n"
