"""Record and replay, end to end over HTTP: ``serve --upstream URL --record DIR`` against a
fake upstream with irregular timing, then ``serve --replay DIR``, judged by the official
SDKs (``openai``: chat completions and Responses; ``anthropic``; the AI SDK's chat
transport on Node).

Pacing runs on a FakeClock, so a replayed reply's timers are reached at once and
``FakeClock.sleeps`` lists the deadlines kept: the recorded arrivals (``/ speed``), or the
profile's schedule. No assertion here depends on how fast the machine is: how close the
recorded and replayed timing come to the upstream's is measured by
``scripts/replay_fidelity.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from node_support import node_binary, run_node
from pytest_aiohttp import AiohttpServer

from tokenstream import cli
from tokenstream.config import Config, RecordConfig, ReplayConfig, ServerConfig, UpstreamConfig
from tokenstream.config.loading import load_config
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.events import (
    Finish,
    ModelName,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.messages import ChatMessage, Conversation
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.errors import ConfigError
from tokenstream.server.app import STATE, create_app
from tokenstream.sources.fixtures import (
    Fixture,
    FixtureError,
    fixture_key,
    normalised_request,
    read_fixture,
)

from upstream_support import (
    DIALECT_STREAMS,
    UPSTREAM_MODEL,
    FakeUpstream,
    Script,
    parse_sse,
    start_stream,
    streams,
)

KEY = "sk-proj-REAL-LOOKING-upstream-key-0123456789abcdef"
CLIENT_KEY = "sk-client-own-key-9876543210-SECRET"
KEY_ENV = "TOKENSTREAM_TEST_RECORD_KEY"
MODEL = "gpt-test"
MAX_TOKENS = 300
SYSTEM = "Be brief."
PROMPT = "What is the weather in Paris?"

TEXT = ["你好，", "世界！Hi 👋", "🏽 family: 👩‍", "👩‍👧‍👦 🇯", "🇵\r\nline two\r", "\nend 我懒得写"]
REPLY = "".join(TEXT)
REASONING = ["Let", " me", " think", " about", " it."]
CALL = ("call_abc", "get_weather", ['{"', "city", '": "Pa', 'ris"}'])
ARGUMENTS = "".join(CALL[2])
FULL = Script(text=TEXT, reasoning=REASONING, call=CALL, finish="tool_calls")

GAP_S = 0.03
"""The upstream's pause before the text."""


# -- servers -------------------------------------------------------------------------------


@dataclass
class Served:
    server: TestServer
    app: web.Application
    upstream: FakeUpstream | None = None

    def url(self, path: str = "") -> str:
        return str(self.server.make_url(path))

    @property
    def clock(self) -> FakeClock:
        clock = self.app[STATE].clock
        assert isinstance(clock, FakeClock)
        return clock


MakeServed = Callable[..., Awaitable[Served]]


def irregular(parts: list[bytes], then: str = "end") -> Any:
    """The upstream: each event in its own write, after an irregular pause (none, 1 ms, 3 ms,
    ...), and ``GAP_S`` before the first text (``TEXT[0]``); ``then``: ``end``, or ``drop``
    the connection before the end."""

    async def behaviour(request: web.Request, upstream: FakeUpstream) -> web.StreamResponse:
        response = await start_stream(request)
        for number, part in enumerate(parts):
            if TEXT[0].encode() in part:
                await asyncio.sleep(GAP_S)
            await asyncio.sleep((0.0, 0.001, 0.003, 0.0, 0.002)[number % 5])
            await response.write(part)
        if then == "drop":
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    return behaviour


@pytest.fixture
async def served(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeServed]:
    monkeypatch.setenv(KEY_ENV, KEY)

    async def make(
        *, upstream: str | None = None, record: Path | None = None, replay: Path | None = None,
        forward_client_auth: bool = False, **replay_fields: Any,
    ) -> Served:
        fake = None
        fields: dict[str, Any] = {}
        if upstream is not None:
            fake = FakeUpstream()
            upstream_server = await aiohttp_server(fake.app())
            fields = {"base_url": str(upstream_server.make_url("/v1")), "api_key_env": KEY_ENV,
                      "profile": "instant", "dialect": upstream,
                      "forward_client_auth": forward_client_auth}
        config = Config(
            server=ServerConfig(heartbeat_s=None), upstream=UpstreamConfig(**fields),
            record=RecordConfig(dir=record),
            replay=ReplayConfig(dir=replay, **replay_fields),
        )
        app = create_app(config, clock=FakeClock(), environ={})
        return Served(await aiohttp_server(app), app, fake)

    yield make


# -- clients -------------------------------------------------------------------------------


@dataclass
class Got:
    text: str = ""
    reasoning: str = ""
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    finish: str | None = None
    usage: tuple[int, int] | None = None


def _openai(served: Served) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=served.url("/v1"), api_key=CLIENT_KEY, max_retries=0)


def _anthropic(served: Served) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=served.url(""), api_key=CLIENT_KEY, max_retries=0)


async def chat(
    served: Served, extra: dict[str, Any] | None = None, max_tokens: int | None = MAX_TOKENS
) -> Got:
    """``max_tokens`` None: not given (as the AI SDK's chat cannot give it)."""
    got = Got()
    calls: dict[int, list[str]] = {}
    limit = {} if max_tokens is None else {"max_tokens": max_tokens}
    async with _openai(served) as client:
        stream = await client.chat.completions.create(
            model=MODEL, stream=True, stream_options={"include_usage": True},
            extra_body={**limit, **(extra or {})},
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        )
        async for chunk in stream:
            if chunk.usage is not None:
                got.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            for choice in chunk.choices:
                got.text += choice.delta.content or ""
                got.reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
                for call in choice.delta.tool_calls or ():
                    entry = calls.setdefault(call.index, ["", "", ""])
                    entry[0] += call.id or ""
                    entry[1] += (call.function and call.function.name) or ""
                    entry[2] += (call.function and call.function.arguments) or ""
                got.finish = choice.finish_reason or got.finish
    got.calls = [(c[0], c[1], c[2]) for _, c in sorted(calls.items())]
    return got


async def responses(served: Served, extra: dict[str, Any] | None = None) -> Got:
    got = Got()
    async with _openai(served) as client, client.responses.stream(
        model=MODEL, instructions=SYSTEM, input=PROMPT, max_output_tokens=MAX_TOKENS,
        extra_body=extra,
    ) as stream:
        async for event in stream:
            if event.type == "response.reasoning_summary_text.delta":
                got.reasoning += event.delta
        final = await stream.get_final_response()
    got.text = final.output_text
    got.calls = [(item.call_id, item.name, item.arguments)
                 for item in final.output if item.type == "function_call"]
    got.finish = final.status
    assert final.usage is not None
    got.usage = (final.usage.input_tokens, final.usage.output_tokens)
    return got


async def messages(served: Served, extra: dict[str, Any] | None = None) -> Got:
    got = Got()
    arguments: dict[int, str] = {}  # the input as streamed (the final message parses it)
    async with _anthropic(served) as client, client.messages.stream(
        model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM,
        messages=[{"role": "user", "content": PROMPT}], extra_body=extra,
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                arguments[event.index] = arguments.get(event.index, "") + event.delta.partial_json
        final = await stream.get_final_message()
    got.text = "".join(block.text for block in final.content if block.type == "text")
    got.reasoning = "".join(b.thinking for b in final.content if b.type == "thinking")
    got.calls = [(block.id, block.name, arguments[index])
                 for index, block in enumerate(final.content) if block.type == "tool_use"]
    got.finish = final.stop_reason
    got.usage = (final.usage.input_tokens, final.usage.output_tokens)
    return got


async def ui(served: Served, extra: dict[str, Any] | None = None) -> Got:
    """The AI SDK's chat transport (``useChat``) on Node; the system prompt as its first
    message."""
    result = await run_node(node_binary(), "ui_chat.mjs", {
        "mode": "transport", "api": served.url("/api/chat"),
        "messages": [
            {"id": "s1", "role": "system", "parts": [{"type": "text", "text": SYSTEM}]},
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": PROMPT}]},
        ],
        "body": {"model": MODEL, **(extra or {})},
    })
    assert result["streamErrors"] == [], result
    got = Got()
    arguments: dict[str, str] = {}  # the input as streamed (tool-input-available parses it)
    for chunk in result["chunks"]:
        if chunk["type"] == "reasoning-delta":
            got.reasoning += chunk["delta"]
        elif chunk["type"] == "tool-input-delta":
            call_id = chunk["toolCallId"]
            arguments[call_id] = arguments.get(call_id, "") + chunk["inputTextDelta"]
        elif chunk["type"] == "tool-input-available":
            got.calls.append((chunk["toolCallId"], chunk["toolName"],
                              arguments[chunk["toolCallId"]]))
        elif chunk["type"] == "finish":
            got.finish = chunk["finishReason"]
    got.text = "".join(part["text"] for part in result["message"]["parts"]
                       if part["type"] == "text")
    return got


CLIENTS: dict[str, Callable[..., Awaitable[Got]]] = {
    "chat": chat, "responses": responses, "messages": messages, "ui": ui,
}
TOOL_FINISH = {"chat": "tool_calls", "responses": "completed", "messages": "tool_use",
               "ui": "tool-calls"}


def conversation(max_tokens: int | None = MAX_TOKENS) -> Conversation:
    """The conversation every client above asks, in neutral terms."""
    return Conversation(
        MODEL, [ChatMessage("system", SYSTEM), ChatMessage("user", PROMPT)], max_tokens
    )


def fixture_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if not path.name.startswith("."))


async def settled(served: Served) -> None:
    """The fixture writes finished (they run in a worker thread after the reply)."""
    from tokenstream.server.recording import RECORDER

    await served.app[RECORDER].aclose()


async def recorded(
    served_: MakeServed, directory: Path, upstream: str = "openai-chat",
    ask: Callable[[Served], Awaitable[Got]] = chat,
) -> Fixture:
    """``FULL`` recorded from an ``upstream`` proxy, asked with ``ask``."""
    recording = await served_(upstream=upstream, record=directory)
    assert recording.upstream is not None
    recording.upstream.behaviour = irregular(DIALECT_STREAMS[upstream](FULL))
    await ask(recording)
    await settled(recording)
    (path,) = fixture_files(directory)
    return read_fixture(path)


# -- recording -----------------------------------------------------------------------------


async def test_a_recorded_fixture_holds_the_request_and_every_event_with_its_arrival(
    served: MakeServed, tmp_path: Path
) -> None:
    recording = await served(upstream="openai-chat", record=tmp_path, forward_client_auth=True)
    assert recording.upstream is not None
    recording.upstream.behaviour = irregular(DIALECT_STREAMS["openai-chat"](FULL))
    got = await chat(recording)
    assert got.text == REPLY  # the client gets the reply as without recording
    assert got.calls == [(CALL[0], CALL[1], ARGUMENTS)]
    await settled(recording)

    (path,) = fixture_files(tmp_path)
    key = fixture_key(normalised_request(conversation()))
    assert path.name == f"{key}.json"
    raw = json.loads(path.read_text("utf-8"))
    assert raw["upstream"]["dialect"] == "openai-chat"
    assert raw["request"] == {
        "model": MODEL, "max_tokens": MAX_TOKENS, "tools": [],
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
    }
    fixture = read_fixture(path)
    assert fixture.key == key
    events = [event for _, event in fixture.events]
    assert events[0] == ModelName(UPSTREAM_MODEL)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == REPLY
    assert [e.text for e in events if isinstance(e, TextDelta)] == TEXT  # as they arrived
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == REASONING
    assert [e for e in events if isinstance(e, ToolCallStart)] == [
        ToolCallStart(0, CALL[0], CALL[1])
    ]
    assert [e.arguments for e in events if isinstance(e, ToolCallDelta)] == CALL[2]
    assert events[-2:] == [Finish("tool_calls"), Usage(FULL.prompt_tokens, FULL.completion_tokens)]
    offsets = [at for at, _ in fixture.events]
    assert offsets == sorted(offsets) and offsets[0] > 0
    text = path.read_text("utf-8")
    for secret in (KEY, CLIENT_KEY, "authorization", "x-api-key", "Bearer"):
        assert secret.lower() not in text.lower()
    assert recording.upstream.seen[0].headers["Authorization"] == f"Bearer {CLIENT_KEY}"


@pytest.mark.parametrize("upstream", ["openai-chat", "anthropic"])
async def test_the_same_conversation_in_three_dialects_is_one_fixture(
    served: MakeServed, tmp_path: Path, upstream: str
) -> None:
    """Asked in chat completions, Responses and Anthropic Messages (one of them forwarded as
    it came, the others translated): one key, one file."""
    recording = await served(upstream=upstream, record=tmp_path)
    assert recording.upstream is not None
    recording.upstream.behaviour = streams(*DIALECT_STREAMS[upstream](FULL))
    for client in (chat, responses, messages):
        await client(recording)
        await settled(recording)
        assert [p.name for p in fixture_files(tmp_path)] == [
            f"{fixture_key(normalised_request(conversation()))}.json"
        ]
    assert len(recording.upstream.seen) == 3


@pytest.mark.parametrize("then", ["error", "drop"])
async def test_a_failed_or_cut_reply_is_not_recorded(
    served: MakeServed, tmp_path: Path, then: str
) -> None:
    recording = await served(upstream="openai-chat", record=tmp_path)
    assert recording.upstream is not None
    if then == "error":
        script = Script(text=["Partial ", "answer"], error="The model is overloaded")
        recording.upstream.behaviour = irregular(DIALECT_STREAMS["openai-chat"](script))
    else:
        parts = DIALECT_STREAMS["openai-chat"](FULL)
        recording.upstream.behaviour = irregular(parts[:8], then="drop")
    with pytest.raises(openai.APIError):
        await chat(recording)
    await settled(recording)
    assert fixture_files(tmp_path) == []


# -- replaying -----------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["chat", "responses", "messages", "ui"])
async def test_a_reply_recorded_from_openai_replays_in_every_dialect(
    served: MakeServed, tmp_path: Path, client: str
) -> None:
    # the AI SDK's chat has no max tokens: the same conversation has none
    ask = partial(chat, max_tokens=None) if client == "ui" else chat
    fixture = await recorded(served, tmp_path, ask=ask)
    replaying = await served(replay=tmp_path)
    got = await CLIENTS[client](replaying)
    assert got.text == REPLY  # byte-exact: CJK, emoji split across events, CR LF
    assert got.reasoning == "".join(REASONING)
    assert got.calls == [(CALL[0], CALL[1], ARGUMENTS)]
    assert got.finish == TOOL_FINISH[client]
    if client != "ui":
        assert got.usage == (FULL.prompt_tokens, FULL.completion_tokens)
    # the recorded timing, exactly: each timer at a recorded arrival, the last at the last
    arrivals = [at for at, _ in fixture.events]
    sleeps = replaying.clock.sleeps
    assert sleeps and all(any(abs(s - at) < 1e-9 for at in arrivals) for s in sleeps)
    untyped = [at for at, e in fixture.events
               if isinstance(e, ModelName | ToolCallStart | ToolCallEnd | Finish | Usage)]
    assert all(any(abs(s - at) < 1e-9 for s in sleeps) for at in untyped)
    assert sleeps[-1] == pytest.approx(arrivals[-1])


async def test_recorded_from_anthropic_replayed_to_chat(
    served: MakeServed, tmp_path: Path
) -> None:
    fixture = await recorded(served, tmp_path, upstream="anthropic", ask=messages)
    assert fixture.upstream_dialect == "anthropic"
    replaying = await served(replay=tmp_path)
    got = await chat(replaying)
    assert (got.text, got.reasoning, got.calls) == (
        REPLY, "".join(REASONING), [(CALL[0], CALL[1], ARGUMENTS)]
    )


@pytest.mark.parametrize("client", ["chat", "responses", "messages"])
async def test_a_whole_answer_from_a_fixture_in_every_dialect(
    served: MakeServed, tmp_path: Path, client: str
) -> None:
    fixture = await recorded(served, tmp_path)
    replaying = await served(replay=tmp_path)
    if client == "chat":
        async with _openai(replaying) as sdk:
            completion = await sdk.chat.completions.create(
                model=MODEL, max_tokens=MAX_TOKENS, messages=[
                    {"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
            )
        message = completion.choices[0].message
        assert message.content == REPLY
        assert [(c.id, c.function.name, c.function.arguments)  # type: ignore[union-attr]
                for c in message.tool_calls or ()] == [(CALL[0], CALL[1], ARGUMENTS)]
        assert completion.choices[0].finish_reason == "tool_calls"
    elif client == "responses":
        async with _openai(replaying) as sdk:
            response = await sdk.responses.create(
                model=MODEL, instructions=SYSTEM, input=PROMPT, max_output_tokens=MAX_TOKENS
            )
        assert response.output_text == REPLY
        assert [(i.call_id, i.name, i.arguments) for i in response.output
                if i.type == "function_call"] == [(CALL[0], CALL[1], ARGUMENTS)]
    else:
        async with _anthropic(replaying) as sdk:
            answer = await sdk.messages.create(
                model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM,
                messages=[{"role": "user", "content": PROMPT}],
            )
        assert [b.text for b in answer.content if b.type == "text"] == [REPLY]
        assert answer.stop_reason == "tool_use"
        assert (answer.usage.input_tokens, answer.usage.output_tokens) == (
            FULL.prompt_tokens, FULL.completion_tokens)
    # answered when the recorded reply ended
    assert replaying.clock.sleeps == pytest.approx([fixture.events[-1][0]])


async def test_replay_speed_scales_the_recorded_timing(
    served: MakeServed, tmp_path: Path
) -> None:
    fixture = await recorded(served, tmp_path)
    normal = await served(replay=tmp_path)
    await chat(normal)
    fast = await served(replay=tmp_path, speed=4.0)
    got = await chat(fast)
    assert got.text == REPLY
    assert fast.clock.sleeps == pytest.approx([at / 4 for at in normal.clock.sleeps])
    assert fast.clock.sleeps[-1] == pytest.approx(fixture.events[-1][0] / 4)


@pytest.mark.parametrize("how", ["config", "request"])
async def test_a_profile_re_paces_the_recorded_reply(
    served: MakeServed, tmp_path: Path, how: str
) -> None:
    """``replay.profile`` (or a profile the request names): the recorded events paced as a
    scripted reply is (steady: 50 tokens/s, no time to first token), its ending recorded."""
    await recorded(served, tmp_path)
    if how == "config":
        replaying = await served(replay=tmp_path, profile="steady")
        got = await chat(replaying)
    else:
        replaying = await served(replay=tmp_path)
        got = await chat(replaying, {"tokenstream": {"profile": "steady"}})
    assert (got.text, got.calls, got.finish) == (
        REPLY, [(CALL[0], CALL[1], ARGUMENTS)], "tool_calls"
    )
    assert got.usage == (FULL.prompt_tokens, FULL.completion_tokens)  # as recorded
    tokenizer = Tokenizer(load_encoding())
    tokens = [piece.tokens for text in ("".join(REASONING), REPLY, ARGUMENTS)
              for piece in tokenizer.pieces(text)]
    assert replaying.clock.sleeps == pytest.approx(list(accumulate(t / 50 for t in tokens[1:])))


# -- a request no fixture matches ----------------------------------------------------------


async def test_on_miss_fail_is_a_404_naming_the_fixture_and_the_directory(
    served: MakeServed, tmp_path: Path
) -> None:
    replaying = await served(replay=tmp_path, on_miss="fail")
    key = fixture_key(normalised_request(conversation()))
    with pytest.raises(openai.NotFoundError) as raised:
        await chat(replaying)
    assert key in raised.value.message and str(tmp_path) in raised.value.message
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "fixture_not_found"
    with pytest.raises(anthropic.NotFoundError) as anthropic_raised:
        await messages(replaying)
    body = anthropic_raised.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert key in body["error"]["message"]


async def test_on_miss_default_is_the_scripted_reply(served: MakeServed, tmp_path: Path) -> None:
    await recorded(served, tmp_path)
    replaying = await served(replay=tmp_path, on_miss="default")
    async with _openai(replaying) as sdk:
        stream = await sdk.chat.completions.create(
            model=MODEL, stream=True, messages=[{"role": "user", "content": "hello"}],
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text.startswith("Hello! I'm tokenstream.")
    assert (await chat(replaying)).text == REPLY  # a match is still replayed


async def test_on_miss_upstream_records_and_the_next_time_replays(
    served: MakeServed, tmp_path: Path
) -> None:
    """``--upstream URL --record DIR --replay DIR --replay-on-miss upstream``: the upstream
    answers once, the fixture every time after."""
    both = await served(upstream="openai-chat", record=tmp_path, replay=tmp_path,
                        on_miss="upstream")
    assert both.upstream is not None
    both.upstream.behaviour = irregular(DIALECT_STREAMS["openai-chat"](FULL))
    first = await chat(both)
    await settled(both)
    second = await messages(both)
    assert (first.text, second.text) == (REPLY, REPLY)
    assert len(both.upstream.seen) == 1
    assert len(fixture_files(tmp_path)) == 1


async def test_a_request_for_the_scripted_source_is_not_replayed(
    served: MakeServed, tmp_path: Path
) -> None:
    await recorded(served, tmp_path)
    replaying = await served(replay=tmp_path)
    got = await chat(replaying, {"tokenstream": {"source": "scripted"}})
    assert got.text != REPLY and got.calls[0][1] == "get_weather"  # the scripted weather rule


# -- fixtures that cannot be used ----------------------------------------------------------


def _good(tmp_path: Path) -> dict[str, Any]:
    return {
        "tokenstream_fixture": 1,
        "upstream": {"dialect": "openai-chat"},
        "request": normalised_request(conversation()),
        "events": [{"at_ms": 5, "type": "text", "text": "Hi"},
                   {"at_ms": 9, "type": "finish", "reason": "stop"}],
    }


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda f: "{not json", "not valid JSON"),
    (lambda f: {**f, "events": [{"at_ms": 1, "type": "txt", "text": "x"}]}, "events.0"),
    (lambda f: {**f, "events": [{"at_ms": 9, "type": "text", "text": "a"},
                                {"at_ms": 2, "type": "text", "text": "b"}]},
     "events.1.at_ms: 2"),
    (lambda f: {**f, "events": [{"at_ms": -1, "type": "text", "text": "a"}]}, "events.0"),
    (lambda f: {k: v for k, v in f.items() if k != "request"}, "request: Field required"),
    (lambda f: {**f, "secret": "x"}, "secret: unknown key"),
])
def test_a_corrupt_fixture_stops_start_up_naming_the_file_and_the_reason(
    tmp_path: Path, damage: Callable[[dict[str, Any]], Any], reason: str
) -> None:
    path = tmp_path / "broken.json"
    content = damage(_good(tmp_path))
    path.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    with pytest.raises(FixtureError) as raised:
        create_app(Config(replay=ReplayConfig(dir=tmp_path)), clock=FakeClock())
    assert str(path) in str(raised.value)
    assert reason in str(raised.value)


def test_two_fixtures_of_one_request_stop_start_up(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_good(tmp_path)), "utf-8")
    (tmp_path / "b.yaml").write_text(json.dumps(_good(tmp_path)), "utf-8")  # YAML is read too
    with pytest.raises(FixtureError, match=r"answers the same request as .*a\.json"):
        create_app(Config(replay=ReplayConfig(dir=tmp_path)), clock=FakeClock())


def test_serve_with_a_corrupt_fixture_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x.json").write_text("[]", "utf-8")
    assert cli.main(["serve", "--replay", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "x.json") in error and "valid dictionary" in error


def test_serve_without_the_replay_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--replay", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err


# -- configuration -------------------------------------------------------------------------


def test_the_serve_flags_set_record_and_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(app: web.Application, **kwargs: Any) -> None:
        from tokenstream.server.app import CONFIG

        seen["config"] = app[CONFIG]

    monkeypatch.setattr("tokenstream.server.serve.serve", fake_serve)
    code = cli.main([
        "serve", "--upstream", "http://127.0.0.1:9/v1", "--record", str(tmp_path / "new"),
        "--replay", str(tmp_path), "--replay-speed", "2.5", "--replay-on-miss", "upstream",
        "--replay-profile", "fast",
    ])
    assert code == 0
    config = seen["config"]
    assert config.record.dir == tmp_path / "new"
    assert (tmp_path / "new").is_dir()  # made at start-up
    assert config.replay == ReplayConfig(
        dir=tmp_path, speed=2.5, on_miss="upstream", profile="fast"
    )


@pytest.mark.parametrize(("argv", "says"), [
    (["--record", "DIR"], "record.dir: recording needs an upstream"),
    (["--replay", "DIR", "--replay-on-miss", "upstream"], "'upstream' needs upstream.base_url"),
    (["--replay", "DIR", "--replay-speed", "0"], "replay.speed: Input should be greater than 0"),
    (["--replay", "DIR", "--replay-profile", "warp"], "'warp' is not among the profiles"),
    (["--upstream", "http://h/v1", "--replay", "DIR", "--replay-on-miss", "default"],
     "'default' (the scripted reply) is not used with upstream.base_url"),
])
def test_record_and_replay_flags_that_do_not_fit_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    argv = [str(tmp_path) if arg == "DIR" else arg for arg in argv]
    assert cli.main(["serve", *argv]) == 2
    assert says in capsys.readouterr().err


def test_the_config_file_directories_are_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "tokenstream.yaml"
    path.parent.mkdir()
    path.write_text(
        "upstream:\n  base_url: http://127.0.0.1:9/v1\n"
        "record:\n  dir: fixtures\nreplay:\n  dir: fixtures\n  on_miss: upstream\n",
        "utf-8",
    )
    config = load_config(path)
    assert config.record.dir == tmp_path / "conf" / "fixtures"
    assert config.replay.dir == tmp_path / "conf" / "fixtures"
    bad = tmp_path / "bad.yaml"
    bad.write_text("replay:\n  dir: f\n  on_miss: upstream\n", "utf-8")
    with pytest.raises(ConfigError, match=r"replay\.on_miss: 'upstream' needs upstream\.base_url"):
        load_config(bad)


async def test_get_stream_is_recorded_and_replayed_in_its_formats(
    served: MakeServed, tmp_path: Path
) -> None:
    """``GET /v1/stream`` asks the prompt as one user message: recorded through the proxy,
    replayed in tokenstream's JSON events and in a dialect's own (``dialect=anthropic``)."""
    recording = await served(upstream="openai-chat", record=tmp_path)
    assert recording.upstream is not None
    recording.upstream.behaviour = irregular(DIALECT_STREAMS["openai-chat"](FULL))
    query = {"prompt": PROMPT, "model": MODEL, "max_tokens": "300", "format": "json"}
    async with aiohttp.ClientSession() as session:
        async with session.get(recording.url("/v1/stream"), params=query) as response:
            live = await response.read()
        await settled(recording)
        (path,) = fixture_files(tmp_path)
        alone = Conversation(MODEL, [ChatMessage("user", PROMPT)], 300)
        assert path.name == f"{fixture_key(normalised_request(alone))}.json"
        replaying = await served(replay=tmp_path)
        async with session.get(replaying.url("/v1/stream"), params=query) as response:
            replayed = await response.read()
        del query["format"]
        async with session.get(
            replaying.url("/v1/stream"), params={**query, "dialect": "anthropic"}
        ) as response:
            anthropic_events = parse_sse(await response.read())
    assert _text_events(replayed) == _text_events(live) == REPLY
    deltas = [json.loads(event.data) for event in anthropic_events
              if event.event == "content_block_delta"]
    assert "".join(d["delta"].get("text", "") for d in deltas) == REPLY
    assert "".join(d["delta"].get("partial_json", "") for d in deltas) == ARGUMENTS


def _text_events(body: bytes) -> str:
    return "".join(json.loads(event.data)["token"] for event in parse_sse(body)
                   if event.data != "[DONE]")
