"""The page's JavaScript modules, run in Chromium: the SSE parser against the Python reference
parser (``tokenstream.sse.parser``), the dialect readers against real server streams and the
shared vectors, and the measurement arithmetic with made-up times."""

from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tokenstream.engine.tokenizer import Tokenizer, load_encoding
from tokenstream.sse.parser import SSEDecoder

from browser_support import Server
from support import scripted_reply

pytestmark = pytest.mark.browser

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "dialect_streams.json").read_text(encoding="utf-8")
)

STREAMS = {
    "plain": "data: hello\n\n",
    "no-space": "data:no space\n\n",
    "two-spaces": "data:  two spaces\n\n",
    "multi-line": "data: a\ndata: b\n\n",
    "crlf": "data: a\r\ndata: b\r\n\r\n",
    "cr": "data: a\rdata: b\r\r",
    "comment": ": ping\ndata: x\n\n",
    "named-with-id": "event: custom\ndata: y\nid: 7\n\n",
    "id-with-nul-ignored": "id: 1\ndata: a\n\nid: a\0b\ndata: z\n\n",
    "retry": "retry: 1500\ndata: r\n\nretry: 15x\ndata: s\n\n",
    "field-without-colon": "data\n\n",
    "empty-data": "data:\n\n",
    "unterminated-discarded": "data: kept\n\ndata: unterminated",
    "bom": "\ufeffdata: bom\n\n",
    "type-reset-by-empty-event": "event: x\n\ndata: after\n\n",
    "blank-lines": "data: a\n\n\n\ndata: b\n\n",
    "unknown-field": "field: unknown\ndata: u\n\n",
    "cjk-emoji": "data: 我懒得写你谷搜 👩\u200d👩\u200d👧\u200d👦 🇯🇵\n\n",
    "leading-newlines-in-data": "data: \ndata: \ndata: x\n\n",
}

PARSE_JS = """async ({chunks}) => {
  const { SSEParser } = await import("/static/sse.js");
  const parser = new SSEParser();
  const events = chunks.flatMap((chunk) => parser.feed(chunk));
  events.push(...parser.end());
  return events.map((e) => [e.type, e.data, e.lastEventId, e.retry]);
}"""

READ_BYTES_JS = """async ({chunks}) => {
  const { readEvents } = await import("/static/sse.js");
  const body = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new Uint8Array(chunk));
      controller.close();
    },
  });
  const events = [];
  for await (const e of readEvents(new Response(body))) {
    events.push([e.type, e.data, e.lastEventId, e.retry]);
  }
  return events;
}"""


def _reference(raw: bytes) -> list[list[Any]]:
    decoder = SSEDecoder()
    events = decoder.feed(raw) + decoder.close()
    return [[e.event, e.data, e.id, e.retry] for e in events]


def _splits(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    chunks, start = [], 0
    while start < len(text):
        end = start + rng.randint(1, 4)
        chunks.append(text[start:end])
        start = end
    return chunks


@pytest.mark.parametrize("name", STREAMS)
def test_js_parser_matches_the_reference(page: Page, name: str) -> None:
    text = STREAMS[name]
    expected = _reference(text.encode())
    for chunks in ([text], list(text), _splits(text, 1), _splits(text, 2)):
        assert page.evaluate(PARSE_JS, {"chunks": chunks}) == expected, chunks


@pytest.mark.parametrize("fmt", ["text", "json", "openai"])
@pytest.mark.parametrize("prompt", ["chinese", "emoji"])
def test_server_stream_read_one_byte_at_a_time(
    page: Page, server: Server, fmt: str, prompt: str
) -> None:
    """Real server output, every UTF-8 character split across reads: TextDecoder in stream
    mode and the parser give exactly what the Python reference parser gives."""
    url = f"{server.url}/v1/stream?prompt={prompt}&format={fmt}&profile=instant"
    with urllib.request.urlopen(url, timeout=30) as response:
        raw = response.read()
    expected = _reference(raw)
    assert expected[-1][1] == "[DONE]"
    assert not any("\ufffd" in event[1] for event in expected)
    one_byte = [[byte] for byte in raw]
    assert page.evaluate(READ_BYTES_JS, {"chunks": one_byte}) == expected
    assert page.evaluate(READ_BYTES_JS, {"chunks": [list(raw)]}) == expected


METER_JS = """async ({records, reported}) => {
  const { StreamMeter } = await import("/static/meter.js");
  const meter = new StreamMeter(1000);
  for (const [at, tokens] of records) meter.record(at, tokens);
  if (reported !== null) meter.reportTokens(reported);
  meter.finish(2000);
  return {
    ttft: meter.ttftMs, gaps: meter.gapsMs, tokens: meter.tokens, events: meter.events,
    rate: meter.tokensPerSecond, estimated: meter.estimated, duration: meter.durationMs,
    maxGap: meter.maxGapMs, cumulative: meter.cumulative(),
  };
}"""


def test_meter_with_exact_counts(page: Page) -> None:
    result = page.evaluate(
        METER_JS, {"records": [[1350, 1], [1370, 1], [1410, 2]], "reported": None}
    )
    assert result == {
        "ttft": 350,
        "gaps": [20, 40],
        "tokens": 4,
        "events": 3,
        "rate": 50,  # 3 tokens after the first event, in 60 ms
        "estimated": False,
        "duration": 410,
        "maxGap": 40,
        "cumulative": [[350, 1], [370, 2], [410, 4]],
    }


def test_meter_spreads_a_usage_total_over_unknown_counts(page: Page) -> None:
    records = [[1100, None], [1200, None], [1300, None], [1400, None]]
    estimated = page.evaluate(METER_JS, {"records": records, "reported": 8})
    assert estimated["tokens"] == 8
    assert estimated["estimated"] is True
    assert estimated["rate"] == pytest.approx(20)  # (8 - 2) tokens in 300 ms
    assert estimated["cumulative"][-1] == [400, 8]
    exact = page.evaluate(METER_JS, {"records": records, "reported": 4})
    assert exact["estimated"] is False
    unknown = page.evaluate(METER_JS, {"records": records, "reported": None})
    assert unknown["estimated"] is True


def test_meter_before_anything_arrived(page: Page) -> None:
    result = page.evaluate(METER_JS, {"records": [], "reported": None})
    assert result["ttft"] is None
    assert result["rate"] is None
    assert result["duration"] == 1000  # request -> end, while nothing arrived
    one = page.evaluate(METER_JS, {"records": [[1200, 3]], "reported": None})
    assert one["ttft"] == 200
    assert one["rate"] is None  # a rate needs two arrivals


INTERPRET_JS = """async ({format, data}) => {
  const { interpret } = await import("/static/transports.js");
  return interpret(format, data);
}"""


@pytest.mark.parametrize(
    "fmt,data,expected",
    [
        ("text", " hello", {"text": " hello", "tokens": None}),
        ("text", '{"error": is reply text', {"text": '{"error": is reply text', "tokens": None}),
        ("text", '{"error":{"message":"boom","type":"server_error"}}', {"error": "boom"}),
        ("json", '{"index":0,"token":"你","tokens":2}', {"text": "你", "tokens": 2}),
        ("json", '{"error":{"message":"bad"}}', {"error": "bad"}),
    ],
)
def test_interpret(page: Page, fmt: str, data: str, expected: dict[str, Any]) -> None:
    assert page.evaluate(INTERPRET_JS, {"format": fmt, "data": data}) == expected


def test_interpret_names_an_event_that_is_not_json(page: Page) -> None:
    got = page.evaluate(
        """async () => {
          const { interpret } = await import("/static/transports.js");
          return interpret("json", '{"index":1,"token', "#2 (message)");
        }"""
    )
    assert got["error"].startswith("Malformed event #2 (message): ")
    assert got["error"].endswith(': {"index":1,"token')


def test_request_builders_leave_out_empty_overrides(page: Page) -> None:
    result = page.evaluate(
        """async () => {
          const { streamQuery, chatBody } = await import("/static/transports.js");
          const overrides = { tokens_per_second: 0, ttft_ms: null, jitter: 0.5 };
          return {
            query: String(streamQuery({ prompt: "a b&c", profile: "slow", overrides,
                                        format: "openai", eventName: "" })),
            body: chatBody({ model: "m", messages: [], profile: "fast", overrides }),
          };
        }"""
    )
    assert result["query"] == (
        "prompt=a+b%26c&format=openai&include_usage=true&profile=slow"
        "&tokens_per_second=0&jitter=0.5"
    )
    assert result["body"] == {
        "model": "m",
        "messages": [],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tokenstream": {"profile": "fast", "tokens_per_second": 0, "jitter": 0.5},
    }


def test_request_builders_carry_a_fault_spec(page: Page) -> None:
    result = page.evaluate(
        """async () => {
          const { streamQuery, chatBody } = await import("/static/transports.js");
          const fault = "stall:2s@5,truncate@30";
          return {
            query: String(streamQuery({ prompt: "p", profile: "fast", fault })),
            body: chatBody({ model: "m", messages: [], profile: "fast", fault }).tokenstream,
          };
        }"""
    )
    assert result["query"] == (
        "prompt=p&format=json&profile=fast&fault=stall%3A2s%405%2Ctruncate%4030"
    )
    assert result["body"] == {"profile": "fast", "fault": "stall:2s@5,truncate@30"}


def test_the_query_asks_for_a_dialects_own_events(page: Page) -> None:
    queries = page.evaluate(
        """async () => {
          const { streamQuery } = await import("/static/transports.js");
          const ask = (format, name) => String(streamQuery({
            prompt: "p", profile: "fast", format, eventName: "ignored", dialect: { name } }));
          return [ask("dialect", "anthropic"), ask("dialect", "openai-chat"),
                  ask("json", "anthropic")];
        }"""
    )
    assert queries == [
        "prompt=p&dialect=anthropic&profile=fast",
        "prompt=p&dialect=openai-chat&include_usage=true&profile=fast",
        "prompt=p&format=json&event=ignored&profile=fast",
    ]


READ_DIALECT_JS = """async ({dialect, chunks}) => {
  const { readEvents } = await import("/static/sse.js");
  const { DIALECT_CLIENTS } = await import("/static/dialects.js");
  const body = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new Uint8Array(chunk));
      controller.close();
    },
  });
  const reader = DIALECT_CLIENTS[dialect].reader();
  const got = { text: "", reasoning: "", calls: {}, finish: [], usage: [], errors: [] };
  for await (const event of readEvents(new Response(body))) {
    for (const item of reader.read(event.type, event.data)) {
      if (item.text !== undefined) got.text += item.text;
      if (item.reasoning !== undefined) got.reasoning += item.reasoning;
      if (item.toolCall) got.calls[item.toolCall.key] = { ...item.toolCall, arguments: "" };
      if (item.toolArguments) {
        got.calls[item.toolArguments.key].arguments += item.toolArguments.arguments;
      }
      if (item.finishReason) got.finish.push(item.finishReason);
      if (item.usage) got.usage.push(item.usage.completion_tokens);
      if (item.error) got.errors.push(item.error);
    }
  }
  got.done = reader.done;
  got.calls = Object.values(got.calls)
    .map(({ id, name, arguments: args }) => ({ id, name, arguments: args }));
  return got;
}"""

DIALECT_BODIES = {
    "openai-chat": {"stream_options": {"include_usage": True}},
    "openai-responses": {},
    "anthropic": {"max_tokens": 4096},
}
FINISH = {"openai-chat": "stop", "openai-responses": "completed", "anthropic": "end_turn"}


@pytest.mark.parametrize("dialect", sorted(DIALECT_BODIES))
@pytest.mark.parametrize("prompt", ["chinese", "emoji"])
def test_dialect_streams_read_one_byte_at_a_time(
    page: Page, server: Server, dialect: str, prompt: str
) -> None:
    """Real server output of each dialect's endpoint, every UTF-8 character split across
    reads: the page's reader assembles the scripted reply exactly."""
    path = {"openai-chat": "/v1/chat/completions", "openai-responses": "/v1/responses",
            "anthropic": "/v1/messages"}[dialect]
    content = "input" if dialect == "openai-responses" else "messages"
    body = {"model": "tokenstream-1", "stream": True, "tokenstream": {"profile": "instant"},
            content: prompt if content == "input" else [{"role": "user", "content": prompt}],
            **DIALECT_BODIES[dialect]}
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    reply = scripted_reply(prompt)
    got = page.evaluate(READ_DIALECT_JS, {"dialect": dialect, "chunks": [[b] for b in raw]})
    assert got["text"] == reply
    assert got["done"] is True
    assert got["finish"] == [FINISH[dialect]]
    assert got["usage"] == [Tokenizer(load_encoding()).count(reply)]
    assert got["errors"] == []


@pytest.mark.parametrize("dialect", sorted(VECTORS["streams"]))
def test_dialect_readers_read_reasoning_and_tool_calls(page: Page, dialect: str) -> None:
    raw = "".join(
        (f"event: {kind}\n" if kind != "message" else "") + f"data: {data}\n\n"
        for kind, data in VECTORS["streams"][dialect]
    ).encode()
    got = page.evaluate(READ_DIALECT_JS, {"dialect": dialect, "chunks": [list(raw)]})
    expected = VECTORS["expected"]
    assert got["text"] == expected["text"]
    assert got["reasoning"] == expected["reasoning"]
    assert got["calls"] == expected["tool_calls"]
    assert got["finish"] == [VECTORS["finish_reasons"][dialect]]
    assert got["usage"] == ([] if dialect == "ai-sdk-ui" else [expected["completion_tokens"]])
    assert got["done"] is True


@pytest.mark.parametrize(
    ("dialect", "events", "message"),
    [
        ("openai-chat", [("message", '{"error":{"message":"boom","type":"server_error"}}'),
                         ("message", "[DONE]")], "boom"),
        ("anthropic", [("error", '{"type":"error","error":{"type":"overloaded_error",'
                                 '"message":"busy"}}')], "busy"),
        ("openai-responses", [("error", '{"type":"error","code":"server_error",'
                                        '"message":"oops","param":null}')], "oops"),
        ("ai-sdk-ui", [("message", '{"type":"error","errorText":"nope"}'),
                       ("message", "[DONE]")], "nope"),
        ("anthropic", [("message_start", '{"type":"message_start","message":{}}'),
                       ("content_block_delta", '{"type":"content_block_delta","ind')],
         'Malformed event #2 (content_block_delta): '),
        ("openai-chat", [("message", "42"), ("message", "[DONE]")],
         "Malformed event #1 (message): not a JSON object: 42"),
    ],
)
def test_dialect_readers_report_errors(
    page: Page, dialect: str, events: list[tuple[str, str]], message: str
) -> None:
    raw = "".join(
        (f"event: {kind}\n" if kind != "message" else "") + f"data: {data}\n\n"
        for kind, data in events
    ).encode()
    got = page.evaluate(READ_DIALECT_JS, {"dialect": dialect, "chunks": [list(raw)]})
    assert got["done"] is True
    assert len(got["errors"]) == 1 and message in got["errors"][0]
