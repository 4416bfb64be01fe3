from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from tokenstream.cli import main
from tokenstream.cli.serving import _loop_factory
from tokenstream.client import ReplyRequest, client_dialects, stream_dialect, stream_prompt
from tokenstream.client.dialects import CLIENTS
from tokenstream.client.terminal import TerminalView, format_event
from tokenstream.config import Config, validate_mapping
from tokenstream.dialects.catalog import DIALECTS
from tokenstream.engine.clock import FakeClock
from tokenstream.engine.events import (
    Finish,
    ReasoningDelta,
    ReplyError,
    ReplyEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.errors import TokenstreamError
from tokenstream.server.app import create_app
from tokenstream.sse.parser import ServerSentEvent

from support import canned_async_client, parse_sse, scripted_reply

CHINESE = scripted_reply("chinese")
EMOJI = scripted_reply("emoji")
HELLO = scripted_reply("hello")


async def test_terminal_client_prints_text_and_measures() -> None:
    server = TestServer(create_app(clock=FakeClock()))
    await server.start_server()
    try:
        written: list[str] = []
        summary = await stream_prompt(
            str(server.make_url("/")), "chinese", {"profile": "fast"}, written.append
        )
    finally:
        await server.close()
    assert "".join(written) == CHINESE
    assert summary.error is None
    assert summary.events == len(written)
    assert summary.tokens >= summary.events
    assert "tokens" in summary.describe()


async def test_terminal_client_reports_server_errors() -> None:
    server = TestServer(create_app(clock=FakeClock()))
    await server.start_server()
    try:
        summary = await stream_prompt(
            str(server.make_url("/")), "x", {"profile": "warp"}, lambda _: None
        )
    finally:
        await server.close()
    assert summary.error is not None and "warp" in summary.error


async def _served(config: Config | None = None) -> TestServer:
    server = TestServer(create_app(config, clock=FakeClock(), environ={}))
    await server.start_server()
    return server


def test_the_cli_offers_every_dialect_of_the_table_it_can_speak() -> None:
    assert client_dialects() == list(DIALECTS)  # every dialect has its client side
    assert set(CLIENTS) >= set(DIALECTS)


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize(("prompt", "reply"), [("chinese", CHINESE), ("emoji", EMOJI)],
                         ids=["chinese", "emoji"])
async def test_each_dialect_streams_its_text_exactly(dialect: str, prompt: str, reply: str) -> None:
    server = await _served()
    shown: list[ReplyEvent] = []
    raw: list[ServerSentEvent] = []
    try:
        summary = await stream_dialect(
            str(server.make_url("/")), dialect,
            ReplyRequest(prompt, "tokenstream-1", pacing={"profile": "fast"}),
            shown.append, raw=raw.append,
        )
    finally:
        await server.close()
    assert summary.error is None, summary.error
    texts = [item.text for item in shown if isinstance(item, TextDelta)]
    assert "".join(texts) == reply
    assert summary.events == len(texts) > 1
    assert summary.tokens == Tokenizer(load_encoding()).count(reply)  # the usage total
    assert summary.finish_reason == "stop"  # in the engine's words, whatever the dialect
    assert len(raw) >= len(texts)


async def test_max_tokens_reaches_each_dialect_in_its_own_field() -> None:
    server = await _served()
    try:
        for dialect in ("openai-chat", "anthropic", "openai-responses"):
            shown: list[ReplyEvent] = []
            summary = await stream_dialect(
                str(server.make_url("/")), dialect,
                ReplyRequest("hello", "tokenstream-1", max_tokens=3,
                             pacing={"profile": "instant"}),
                shown.append,
            )
            assert summary.error is None
            assert summary.finish_reason == "length"
            assert summary.events == 3
            assert HELLO.startswith("".join(i.text for i in shown if isinstance(i, TextDelta)))
    finally:
        await server.close()


@pytest.mark.parametrize("dialect", list(DIALECTS))
async def test_a_refusal_in_the_dialects_shape_is_reported(dialect: str) -> None:
    server = await _served()
    try:
        summary = await stream_dialect(
            str(server.make_url("/")), dialect,
            ReplyRequest("x", "tokenstream-1", pacing={"profile": "warp"}), lambda _: None,
        )
    finally:
        await server.close()
    assert summary.error is not None
    # the AI SDK's endpoint refuses in plain text: its transport shows the body as it is
    kind = "" if dialect == "ai-sdk-ui" else " invalid_request_error"
    assert summary.error.startswith(f"HTTP 400{kind}: Unknown profile 'warp'")


@pytest.mark.parametrize("dialect", list(DIALECTS))
async def test_an_error_in_the_stream_is_reported(dialect: str) -> None:
    """The server's time limit ends the stream with the dialect's own error event."""
    config = validate_mapping({
        "server": {"max_stream_duration_s": 1.5, "heartbeat_s": 0},
        "profiles": {"two_per_s": {"tokens_per_second": 2, "ttft_ms": 0, "jitter": 0}},
    }, "<test>")
    server = await _served(config)
    shown: list[ReplyEvent] = []
    try:
        summary = await stream_dialect(
            str(server.make_url("/")), dialect,
            ReplyRequest("hello", "tokenstream-1", pacing={"profile": "two_per_s"}), shown.append,
        )
    finally:
        await server.close()
    assert summary.error is not None
    assert "server.max_stream_duration_s" in summary.error
    assert summary.events == 4
    assert any(isinstance(item, ReplyError) for item in shown)


VECTORS = json.loads((Path(__file__).parent / "vectors" / "dialect_streams.json").read_text(
    encoding="utf-8"))
"""One reply with reasoning, text and a tool call, as each dialect streams it."""


def _vector_events(dialect: str) -> list[ServerSentEvent]:
    return [ServerSentEvent(data, event) for event, data in VECTORS["streams"][dialect]]


@pytest.mark.parametrize("dialect", sorted(VECTORS["streams"]))
def test_each_reader_reads_reasoning_text_and_tool_calls(dialect: str) -> None:
    reader = CLIENTS[dialect].reader()
    items = [item for event in _vector_events(dialect) for item in reader.read(event)]
    assert reader.done
    expected = VECTORS["expected"]
    assert "".join(i.text for i in items if isinstance(i, ReasoningDelta)) == expected["reasoning"]
    assert "".join(i.text for i in items if isinstance(i, TextDelta)) == expected["text"]
    starts = [i for i in items if isinstance(i, ToolCallStart)]
    assert [(s.call_id, s.name) for s in starts] == [
        (call["id"], call["name"]) for call in expected["tool_calls"]
    ]
    arguments = "".join(i.arguments for i in items
                        if isinstance(i, ToolCallDelta) and i.index == starts[0].index)
    assert arguments == expected["tool_calls"][0]["arguments"]
    # in order: reasoning, then text, then the call; it ends before the finish
    kinds = [type(i) for i in items if not isinstance(i, (Finish, Usage))]
    assert kinds.index(TextDelta) > kinds.index(ReasoningDelta)
    assert kinds.index(ToolCallStart) > max(n for n, k in enumerate(kinds) if k is TextDelta)
    if dialect != "openai-chat":  # OpenAI chunks have no event for a call's end
        assert kinds[-1] is ToolCallEnd
    assert [i.reason for i in items if isinstance(i, Finish)] == ["tool_calls"]
    usage = [i.completion_tokens for i in items if isinstance(i, Usage)]
    assert usage == ([] if dialect == "ai-sdk-ui" else [expected["completion_tokens"]])


def _sse_body(dialect: str) -> bytes:
    return b"".join(
        (f"event: {event}\n" if event != "message" else "").encode()
        + f"data: {data}\n\n".encode()
        for event, data in VECTORS["streams"][dialect]
    )


async def test_the_anthropic_vector_is_what_the_sdk_reads() -> None:
    """The vectors are the APIs' shapes: the official SDKs add them up as expected."""
    sdk = AsyncAnthropic(api_key="x", base_url="http://t",
                         http_client=canned_async_client(_sse_body("anthropic")))
    async with sdk.messages.stream(
        model="m", max_tokens=100, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        final = await stream.get_final_message()
    expected = VECTORS["expected"]
    thinking, text, tool = final.content
    assert thinking.type == "thinking" and thinking.thinking == expected["reasoning"]
    assert text.type == "text" and text.text == expected["text"]
    assert tool.type == "tool_use" and tool.name == "get_weather"
    assert tool.input == json.loads(expected["tool_calls"][0]["arguments"])
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == expected["completion_tokens"]


async def test_the_responses_vector_is_what_the_sdk_reads() -> None:
    sdk = AsyncOpenAI(api_key="x", base_url="http://t",
                      http_client=canned_async_client(_sse_body("openai-responses")))
    async with sdk.responses.stream(model="m", input="x") as stream:
        final = await stream.get_final_response()
    expected = VECTORS["expected"]
    reasoning, message, call = final.output
    assert message.type == "message"
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == expected["reasoning"]
    assert final.output_text == expected["text"]
    assert call.type == "function_call" and call.call_id == "call_abc"
    assert call.arguments == expected["tool_calls"][0]["arguments"]
    assert final.usage is not None and final.usage.output_tokens == expected["completion_tokens"]


@pytest.mark.parametrize(
    ("dialect", "event", "message"),
    [
        ("openai-chat", ServerSentEvent('{"error":{"message":"boom","type":"server_error"}}'),
         "boom"),
        ("anthropic", ServerSentEvent(
            '{"type":"error","error":{"type":"overloaded_error","message":"busy"}}', "error"),
         "busy"),
        ("openai-responses", ServerSentEvent(
            '{"type":"error","code":"server_error","message":"oops","param":null}', "error"),
         "oops"),
        ("ai-sdk-ui", ServerSentEvent('{"type":"error","errorText":"nope"}'), "nope"),
        ("anthropic", ServerSentEvent("not json", "content_block_delta"), "not JSON"),
    ],
)
def test_readers_report_errors_in_their_dialects_shape(
    dialect: str, event: ServerSentEvent, message: str
) -> None:
    items = CLIENTS[dialect].reader().read(event)
    assert len(items) == 1 and isinstance(items[0], ReplyError)
    assert message in items[0].message


FINISH_EVENT = {"openai-chat": -3, "anthropic": -2, "openai-responses": -1, "ai-sdk-ui": -2}
"""Where each vector's finish reason is, from its end."""


@pytest.mark.parametrize("dialect", sorted(VECTORS["streams"]))
def test_a_stream_cut_short_is_an_error_and_one_that_ends_after_its_finish_is_not(
    dialect: str,
) -> None:
    events = _vector_events(dialect)
    finish = len(events) + FINISH_EVENT[dialect]
    cut = CLIENTS[dialect].reader()
    for event in events[:finish]:
        assert not [i for i in cut.read(event) if isinstance(i, ReplyError)]
    ending = cut.close()
    assert cut.done
    assert [i.message for i in ending if isinstance(i, ReplyError)] == [
        "The server closed the stream before the reply was complete."
    ]
    whole = CLIENTS[dialect].reader()
    items = [item for event in events[:finish + 1] for item in whole.read(event)]
    items += whole.close()
    assert not [i for i in items if isinstance(i, ReplyError)]
    assert [i.reason for i in items if isinstance(i, Finish)] == ["tool_calls"]


def test_the_terminal_keeps_stdout_for_the_reply_text() -> None:
    out: list[str] = []
    aside: list[str] = []
    view = TerminalView(out.append, aside.append)
    reader = CLIENTS["anthropic"].reader()
    for event in _vector_events("anthropic"):
        for item in reader.read(event):
            view.show(item)
    view.close()
    assert "".join(out) == VECTORS["expected"]["text"]
    assert "".join(aside) == (
        "thinking: Let me check.\n\ntool call get_weather call_abc: {\"city\":\"Paris\"}\n"
    )


def test_raw_events_are_shown_as_their_sse_lines() -> None:
    assert format_event(ServerSentEvent('{"a":1}', "message_stop", "done")) == (
        'event: message_stop\nid: done\ndata: {"a":1}\n\n'
    )
    assert format_event(ServerSentEvent("a\nb")) == "data: a\ndata: b\n\n"


def test_the_cli_and_the_dialect_table_load_nothing_heavy() -> None:
    """``tokenstream --help`` (and the table it lists) loads neither the server's dialects
    nor the HTTP client: each command imports what it uses."""
    code = ("import sys, tokenstream.cli; "
            "print(sorted({'aiohttp', 'pydantic', 'tiktoken'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_bad_config_stops_start_up_with_file_key_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("profiles:\n  x:\n    ttft_ms: -1\n", encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "profiles.x.ttft_ms" in err
    assert "greater than or equal to 0" in err


def test_unknown_profile_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--profile", "warp"]) == 2
    assert "chatgpt" in capsys.readouterr().err


def test_loop_auto_is_uvloop_when_installed_else_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvloop  # in the test extra

    assert _loop_factory("auto") == ("uvloop", uvloop.new_event_loop)
    assert _loop_factory("asyncio") == ("asyncio", asyncio.new_event_loop)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert _loop_factory("auto") == ("asyncio", asyncio.new_event_loop)
    with pytest.raises(TokenstreamError, match=r"pip install 'tokenstream\[uvloop\]'"):
        _loop_factory("uvloop")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served() -> Iterator[str]:
    """``python -m tokenstream serve`` as a real subprocess on a free port."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenstream", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    banner = process.stdout.readline().decode()  # blocks until the server is listening
    assert f"127.0.0.1:{port}" in banner, banner
    assert "; uvloop)" in banner, banner  # --loop auto, with uvloop installed
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.stdout.close()
        assert process.wait(timeout=30) == 0


@pytest.mark.slow
def test_served_process_streams_to_a_plain_http_client(served: str) -> None:
    url = f"{served}/v1/stream?prompt=chinese&profile=instant"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        events = parse_sse(response.read())
    assert "".join(e.data for e in events[:-1]) == CHINESE
    assert events[-1].data == "[DONE]"


@pytest.mark.slow
def test_stream_command_against_served_process(served: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenstream", "stream", "chinese", "--url", served,
         "--profile", "instant"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == CHINESE + "\n"
    assert "tokens/s" in result.stderr or "tokens in" in result.stderr


@pytest.mark.slow
def test_stream_command_with_a_dialect(served: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenstream", "stream", "emoji", "--url", served,
         "--profile", "instant", "--dialect", "anthropic"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == EMOJI + "\n"
    assert "finish stop" in result.stderr

    raw = subprocess.run(
        [sys.executable, "-m", "tokenstream", "stream", "emoji", "--url", served,
         "--profile", "instant", "--dialect", "openai-responses", "--raw"],
        capture_output=True, text=True, timeout=60,
    )
    assert raw.returncode == 0, raw.stderr
    assert re.match(r"event: response.created\nid: [\w-]+:1\ndata: \{", raw.stdout), raw.stdout
    assert "event: response.output_text.delta\n" in raw.stdout


@pytest.mark.slow
def test_stream_command_exits_non_zero_on_an_error(served: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tokenstream", "stream", "hi", "--url", served,
         "--profile", "warp", "--dialect", "anthropic"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "HTTP 400 invalid_request_error: Unknown profile 'warp'" in result.stderr
