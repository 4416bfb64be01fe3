"""What a terminal client measures about one stream, at the client."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StreamSummary"]


@dataclass(slots=True)
class StreamSummary:
    """Arrivals of the paced events (text, reasoning, tool-call arguments) and how the
    stream ended.

    Tokens per event are exact when the wire format says them (``format=json``); otherwise
    each event counts one until the server's usage total arrives, which is then spread over
    the events (``tokens_exact`` False: the figures are estimates, marked ``≈``).
    """

    started: float = 0.0
    tokens: float = 0
    events: int = 0
    first_event: float | None = None
    last_event: float | None = None
    arrivals: list[float] = field(default_factory=list)
    tokens_exact: bool = True
    finish_reason: str | None = None
    error: str | None = None
    _first_tokens: float = 0

    def record(self, now: float, tokens: int | None) -> None:
        """An event arrived at ``now`` carrying ``tokens`` tokens (None: not said)."""
        if tokens is None:
            self.tokens_exact = False
            tokens = 1
        if self.first_event is None:
            self.first_event = now
            self._first_tokens = tokens
        self.last_event = now
        self.arrivals.append(now)
        self.events += 1
        self.tokens += tokens

    def report_tokens(self, completion_tokens: int) -> None:
        """The server's own count (a usage object): spread over the events when they did not
        carry their counts."""
        if self.tokens_exact or not self.events:
            return
        counted, self.tokens = self.tokens, completion_tokens
        self._first_tokens = completion_tokens / counted  # the first event counted one
        self.tokens_exact = completion_tokens == counted

    @property
    def ttft(self) -> float | None:
        return None if self.first_event is None else self.first_event - self.started

    @property
    def tokens_per_second(self) -> float | None:
        """Rate after the first event: (tokens after it) / (time from it to the last)."""
        if self.first_event is None or self.last_event is None or self.events < 2:
            return None
        span = self.last_event - self.first_event
        return (self.tokens - self._first_tokens) / span if span > 0 else None

    def describe(self) -> str:
        about = "" if self.tokens_exact else "≈"
        parts = [f"{about}{self.tokens:.0f} tokens in {self.events} events"]
        if self.ttft is not None:
            parts.append(f"time to first token {self.ttft * 1000:.0f} ms")
        if self.tokens_per_second is not None:
            parts.append(f"{about}{self.tokens_per_second:.1f} tokens/s")
        if self.last_event is not None:
            parts.append(f"total {self.last_event - self.started:.2f} s")
        if self.finish_reason:
            parts.append(f"finish {self.finish_reason}")
        if self.error:
            parts.append(f"error: {self.error}")
        return " · ".join(parts)
