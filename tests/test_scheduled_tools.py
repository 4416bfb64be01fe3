"""Scripted reasoning and tool calls on the scheduled path: paced token by token like text,
on one schedule, the same for every dialect (on the injectable clock)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tokenstream.config import ReplyRule, RuleConfig, compile_rule
from tokenstream.dialects.ai_sdk_ui import UIMessageStreamFormat
from tokenstream.dialects.anthropic_messages import AnthropicMessagesFormat
from tokenstream.dialects.openai_chat import OpenAIChunkFormat
from tokenstream.dialects.openai_responses import ResponsesFormat
from tokenstream.engine.accounting import StreamStats
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.events import (
    PacedEvent,
    ReasoningDelta,
    ReplyContent,
    ReplyEncoder,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from tokenstream.engine.messages import ChatMessage
from tokenstream.engine.pacer import PacingProfile
from tokenstream.engine.playout import Playout
from tokenstream.engine.reply import ReplyProgress, ScheduledItem, scheduled_reply, whole_reply
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding
from tokenstream.sources.matching import ScriptRequest
from tokenstream.sources.scripted import ScriptedSource, rule_events
from tokenstream.sse.transport import BATCH_BYTES

PROFILE = PacingProfile(tokens_per_second=40, ttft_ms=250, jitter=0.3, seed=7, pause_ms=30)

REASONING = "Let me think: 天气 🌦️ first."
TEXT = " I'll check.\n"
ARGUMENTS = '{"city": "東京", "unit": "celsius"}'


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding())


def _events() -> tuple[ReplyEvent, ...]:
    return (
        ReasoningDelta(REASONING),
        TextDelta(TEXT),
        ToolCallStart(0, "call_1", "get_weather"),
        ToolCallDelta(0, ARGUMENTS),
        ToolCallEnd(0),
        ToolCallStart(1, "call_2", "get_time"),
        ToolCallDelta(1, "{}"),
        ToolCallEnd(1),
    )


def _schedule(
    tokenizer: Tokenizer, reply: str | tuple[ReplyEvent, ...], progress: ReplyProgress,
    max_tokens: int | None = None, profile: PacingProfile = PROFILE,
) -> list[tuple[float, ScheduledItem]]:
    return list(scheduled_reply(reply, tokenizer=tokenizer, profile=profile, start=10.0,
                                max_tokens=max_tokens, progress=progress))


def _text(item: ScheduledItem) -> str:
    if isinstance(item, Piece):
        return item.text
    event = item.event
    assert isinstance(event, ReasoningDelta | ToolCallDelta)
    return event.text if isinstance(event, ReasoningDelta) else event.arguments


def _tokens(tokenizer: Tokenizer, text: str) -> int:
    return sum(piece.tokens for piece in tokenizer.pieces(text))


def _content(items: list[tuple[float, ScheduledItem]]) -> ReplyContent:
    content = ReplyContent()
    for _, item in items:
        content.add(item if isinstance(item, Piece) else item.event)
    return content


def test_reasoning_and_arguments_are_paced_like_text_on_one_schedule(
    tokenizer: Tokenizer,
) -> None:
    progress = ReplyProgress()
    items = _schedule(tokenizer, _events(), progress)
    content = _content(items)
    assert (content.reasoning, content.text) == (REASONING, TEXT)
    assert [(c.call_id, c.name, c.arguments) for c in content.tool_calls] == [
        ("call_1", "get_weather", ARGUMENTS), ("call_2", "get_time", "{}")]
    # every token is an event of its own, in order, with the deadline the same tokens would
    # have as plain text: one schedule for reasoning, text and arguments
    paced = [(deadline, item) for deadline, item in items if item.tokens]
    joined = REASONING + TEXT + ARGUMENTS + "{}"
    text_only = _schedule(tokenizer, joined, ReplyProgress())
    assert [d for d, _ in paced] == [d for d, _ in text_only]
    assert "".join(_text(item) for _, item in paced) == joined
    assert progress.completion_tokens == sum(
        _tokens(tokenizer, text) for text in (REASONING, TEXT, ARGUMENTS, "{}"))
    assert progress.finish_reason == "tool_calls"


def test_a_tool_call_starts_with_its_first_argument_token_and_ends_with_its_last(
    tokenizer: Tokenizer,
) -> None:
    items = _schedule(tokenizer, _events(), ReplyProgress())
    kinds = [type(item.event).__name__ if isinstance(item, PacedEvent) else "Piece"
             for _, item in items]
    first_start = kinds.index("ToolCallStart")
    assert kinds[first_start + 1] == "ToolCallDelta"
    assert items[first_start][0] == items[first_start + 1][0]
    first_end = kinds.index("ToolCallEnd")
    assert kinds[first_end - 1] == "ToolCallDelta"
    assert items[first_end][0] == items[first_end - 1][0]
    starts = [item for _, item in items if isinstance(item, PacedEvent)
              and isinstance(item.event, ToolCallStart | ToolCallEnd)]
    assert all(item.tokens == 0 for item in starts)


def test_the_token_limit_cuts_the_arguments_and_the_reply_ends_by_length(
    tokenizer: Tokenizer,
) -> None:
    limit = _tokens(tokenizer, REASONING) + _tokens(tokenizer, TEXT) + 3
    progress = ReplyProgress()
    items = _schedule(tokenizer, _events(), progress, max_tokens=limit)
    content = _content(items)
    assert progress.truncated and progress.finish_reason == "length"
    assert progress.completion_tokens == sum(item.tokens for _, item in items) <= limit
    assert len(content.tool_calls) == 1
    assert ARGUMENTS.startswith(content.tool_calls[0].arguments)
    assert content.tool_calls[0].arguments != ARGUMENTS


def test_chunked_profiles_chunk_each_kind_of_text_apart(tokenizer: Tokenizer) -> None:
    profile = PacingProfile(tokens_per_second=40, chunk_tokens=4)
    items = _schedule(tokenizer, _events(), ReplyProgress(), profile=profile)
    content = _content(items)
    assert (content.reasoning, content.text, content.tool_calls[0].arguments) == (
        REASONING, TEXT, ARGUMENTS)
    paced = [item for _, item in items if item.tokens]
    assert max(item.tokens for item in paced) <= 4 + 1
    assert len(paced) < len(_schedule(tokenizer, _events(), ReplyProgress())) / 2


async def test_a_text_reply_stays_a_string(tokenizer: Tokenizer) -> None:
    async def events() -> Iterator[ReplyEvent]:  # type: ignore[misc]
        yield TextDelta("a")
        yield TextDelta("b")

    assert await whole_reply(events()) == "ab"  # type: ignore[arg-type]


class _Sink:
    batch_bytes = BATCH_BYTES

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.data: list[bytes] = []

    def write_nowait(self, data: bytes, now: float | None = None) -> bool:
        self.times.append(self.clock.now())
        self.data.append(data)
        return True

    async def send(self, data: bytes) -> None:
        self.write_nowait(data)


ENCODERS: dict[str, Callable[[], ReplyEncoder]] = {
    "openai-chat": lambda: OpenAIChunkFormat(model="m", include_usage=True),
    "openai-responses": lambda: ResponsesFormat(model="m"),
    "anthropic": lambda: AnthropicMessagesFormat(model="m"),
    "ai-sdk-ui": lambda: UIMessageStreamFormat(message_id="msg-1"),
}


@pytest.mark.parametrize("reply", ["text", "tools"])
async def test_one_profile_and_seed_give_every_dialect_the_same_schedule(
    tokenizer: Tokenizer, reply: str
) -> None:
    """The schedule is the engine's: the dialect only encodes what is due."""
    source: str | tuple[ReplyEvent, ...] = REASONING + TEXT if reply == "text" else _events()
    timelines = {}
    for name, make_encoder in ENCODERS.items():
        clock = FakeClock()
        sink = _Sink(clock)
        events = scheduled_reply(source, tokenizer=tokenizer, profile=PROFILE,
                                 start=clock.now(), max_tokens=None, progress=ReplyProgress())
        playout = Playout(sink, clock, events, make_encoder(), StreamStats())
        await playout.run()
        assert all(sink.data)  # every due event wrote something in every dialect
        timelines[name] = sink.times
    first = next(iter(timelines.values()))
    assert len(first) > 10
    assert all(times == first for times in timelines.values()), timelines


def _rule(**fields: object) -> ReplyRule:
    config = RuleConfig.model_validate(fields)
    return compile_rule(config, config.reply or "")


def test_a_rule_scripts_reasoning_text_then_each_tool_call_whole() -> None:
    rule = _rule(match="weather", reasoning="hm", reply="Sure.",
                 tool_calls=[{"name": "get_weather", "arguments": {"city": "Zürich"}},
                             {"name": "now", "arguments": '{"tz": "UTC"}', "id": "call_fixed"}])
    events = rule_events(rule)
    assert events[:2] == [ReasoningDelta("hm"), TextDelta("Sure.")]
    start = events[2]
    assert isinstance(start, ToolCallStart) and start.name == "get_weather"
    assert start.call_id.startswith("call_") and len(start.call_id) == 29
    assert events[3] == ToolCallDelta(0, '{"city": "Zürich"}')
    assert events[4:] == [ToolCallEnd(0), ToolCallStart(1, "call_fixed", "now"),
                          ToolCallDelta(1, '{"tz": "UTC"}'), ToolCallEnd(1)]
    again = rule_events(rule)[2]
    assert isinstance(again, ToolCallStart) and again.call_id != start.call_id
    assert json.loads(events[3].arguments) == {"city": "Zürich"}  # type: ignore[union-attr]


def test_tool_result_rules_answer_only_tool_results_and_others_only_the_rest() -> None:
    ask = _rule(match="weather", tool_calls=[{"name": "get_weather"}])
    answer = _rule(match="weather", tool_result="sunny", reply="It is sunny.")
    source = ScriptedSource([answer, ask], "default")

    def chosen(messages: list[ChatMessage]) -> ReplyRule | None:
        return source.answer(ScriptRequest(messages, "m", "openai-chat")).rule

    question = [ChatMessage("user", "weather in Paris?")]
    assert chosen(question) is ask
    looped = [*question, ChatMessage("assistant", ""),
              ChatMessage("tool", '{"sky": "sunny"}', tool_call_id="call_1")]
    assert chosen(looped) is answer
    other = [*question, ChatMessage("assistant", ""), ChatMessage("tool", "rain", None, "c")]
    assert chosen(other) is None  # the question is not asked again: default reply
