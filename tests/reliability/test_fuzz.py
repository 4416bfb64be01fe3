"""Property: whatever body or query string arrives, the answer is never a 5xx, and it is
either a valid OpenAI-style JSON error, a valid JSON result, or a valid stream.

One real server (on a FakeClock, so any pacing a request asks for runs instantly) serves
every example from a background thread; the examples are sent with ``http.client``, which
puts bytes on the wire as given (percent-escapes included, valid UTF-8 or not).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, quote_from_bytes

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relhelp import make_app, parse_sse

from tokenstream.server.app import STATE

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class LiveServer:
    port: int
    app: web.Application


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        app = make_app({"heartbeat_s": 15, "max_prompt_tokens": 50_000})
        runner = web.AppRunner(app, shutdown_timeout=5)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        holder["server"] = LiveServer(runner.addresses[0][1], app)
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="fuzz-server", daemon=True)
    thread.start()
    assert started.wait(60)
    server = holder["server"]
    assert isinstance(server, LiveServer)
    yield server
    loop.call_soon_threadsafe(loop.stop)
    thread.join(60)


def _request(port: int, method: str, target: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


PAGE_TYPES = ("text/html", "text/css", "text/javascript", "image/svg+xml")


def check_answer(status: int, content_type: str, body: bytes) -> None:
    """The property itself."""
    assert status < 500, body[:500]
    assert b"Traceback" not in body
    if status == 204:
        assert body == b""
        return
    if content_type.startswith("application/json"):
        document = json.loads(body)
        if status >= 400:
            assert set(document) == {"error"}
            error = document["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert isinstance(error["message"], str) and error["message"]
        else:
            assert document["object"] in ("chat.completion", "list", "model")
        return
    assert status == 200
    if content_type.startswith(PAGE_TYPES):  # the demo page and its files
        return
    assert content_type.startswith("text/event-stream")
    events = parse_sse(body)
    assert events, body[:500]
    assert events[-1].data == "[DONE]"
    # /v1/stream numbers its events; the chat completions API has no ids
    assert events[-1].id == "" or re.fullmatch(r"[\w-]+:\d+", events[-1].id), events[-1].id
    for event in events[:-1]:
        if event.data.startswith("{"):
            document = json.loads(event.data)
            assert isinstance(document, dict)
            if "error" in document:
                assert set(document["error"]) == {"message", "type", "param", "code"}


# --- strategies -----------------------------------------------------------------------------

PACING_FIELDS = ["profile", "source", "tokens_per_second", "ttft_ms", "jitter", "seed",
                 "chunk_tokens", "pause_ms", "newline_pause_ms"]
SPECIAL_NUMBERS = [0, -1, 1, 2, 0.001, 1e-300, 1e308, -1e308, 10**20, -(2**63), 2**64,
                   float("nan"), float("inf"), float("-inf")]
SPECIAL_TEXT = ["", "instant", "steady", "chatgpt", "nope", "scripted", "echo", "openai",
                "json", "text", "true", "null", "hello", "code", "中文", "emoji 🧑‍💻"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(), st.text(max_size=30), st.sampled_from(SPECIAL_NUMBERS),
    st.sampled_from(SPECIAL_TEXT),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=10,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool"])
         | json_values,
         "content": st.text(max_size=200) | st.sampled_from(SPECIAL_TEXT) | json_values},
        optional={"name": st.text(max_size=10) | json_values},
    ),
    max_size=3,
)
pacing = st.dictionaries(
    st.sampled_from([*PACING_FIELDS, "junk"]),
    st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.sampled_from(SPECIAL_TEXT),
              st.floats(min_value=0, max_value=1e5), st.integers(-5, 100), json_values),
    max_size=5,
)
random_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "tokenstream-1"]) | json_values,
     "messages": messages | json_values},
    optional={
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})
        | json_values,
        "max_tokens": st.integers(-5, 60) | json_values,
        "max_completion_tokens": st.integers(-5, 60) | json_values,
        "n": json_values,
        "temperature": json_values,
        "tokenstream": pacing | json_values,
        "extra": json_values,
    },
)
# mostly valid requests, so that streams (and their ends) are exercised as well as errors
valid_pacing = st.fixed_dictionaries({}, optional={
    "profile": st.sampled_from(["instant", "steady", "chatgpt", "fast", "slow", "bursty"]),
    "source": st.sampled_from(["scripted", "echo"]),
    "tokens_per_second": st.none() | st.floats(min_value=0.001, max_value=1e5),
    "ttft_ms": st.floats(min_value=0, max_value=600_000),
    "jitter": st.floats(min_value=0, max_value=3),
    "seed": st.none() | st.integers(-(2**70), 2**70),
    "chunk_tokens": st.integers(1, 50),
    "pause_ms": st.floats(min_value=0, max_value=600_000),
    "newline_pause_ms": st.none() | st.floats(min_value=0, max_value=600_000),
})
valid_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "tokenstream-1"]),
     "messages": st.lists(
         st.fixed_dictionaries({
             "role": st.sampled_from(["user", "system", "assistant"]),
             "content": st.text(max_size=300) | st.sampled_from(SPECIAL_TEXT)}),
         min_size=1, max_size=3)},
    optional={"stream": st.booleans(), "max_tokens": st.integers(1, 60),
              "tokenstream": valid_pacing},
)
mutated_bodies = st.tuples(
    valid_bodies,
    st.sampled_from(["model", "messages", "stream", "max_tokens", "tokenstream",
                     "stream_options", "n", "junk"]),
    st.sampled_from(SPECIAL_NUMBERS) | st.sampled_from(SPECIAL_TEXT) | json_values,
).map(lambda mutation: {**mutation[0], mutation[1]: mutation[2]})
chat_bodies = st.one_of(valid_bodies, mutated_bodies, random_bodies).map(
    lambda body: json.dumps(body).encode()
)
bodies = st.one_of(
    chat_bodies,
    chat_bodies.map(lambda raw: raw[: len(raw) // 2]),  # cut off mid-document
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda text: text.encode("utf-8")),
)

QUERY_KEYS = ["prompt", "format", "event", "model", "max_tokens", "include_usage",
              *PACING_FIELDS]
query_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "-1", "0", "1e400", "9" * 40, "0x10",
                     "1_000", " 5", *SPECIAL_TEXT]),
    st.integers().map(str),
    st.floats().map(repr),
)
text_pairs = st.tuples(st.sampled_from(QUERY_KEYS) | st.text(max_size=8), query_values).map(
    lambda pair: f"{quote(pair[0], safe='')}={quote(pair[1], safe='')}"
)
byte_pairs = st.tuples(st.sampled_from(QUERY_KEYS), st.binary(max_size=12)).map(
    lambda pair: f"{pair[0]}={quote_from_bytes(pair[1], safe='')}"  # often not UTF-8
)
valid_pairs = st.one_of(
    st.sampled_from(["format=openai", "format=json", "format=text", "include_usage=true",
                     "profile=instant", "profile=steady", "profile=bursty", "source=echo",
                     "event=custom", "max_tokens=7", "chunk_tokens=3", "jitter=0.5",
                     "seed=42", "ttft_ms=90000", "tokens_per_second=0.01", "model=m"]),
    st.text(max_size=60).map(lambda text: "prompt=" + quote(text, safe="")),
)
queries = st.one_of(
    st.lists(st.one_of(text_pairs, byte_pairs, valid_pairs), max_size=7).map("&".join),
    st.lists(valid_pairs, max_size=5).map(
        lambda pairs: "&".join(dict.fromkeys(["prompt=hi", *pairs]))
    ),
)


@SETTINGS
@given(body=bodies, content_type=st.sampled_from(["application/json", "text/plain", None]),
       profile_header=st.none() | st.sampled_from(SPECIAL_TEXT))
def test_random_chat_bodies_never_get_a_5xx(
    live_server: LiveServer, body: bytes, content_type: str | None, profile_header: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    if profile_header:
        headers["X-Tokenstream-Profile"] = quote(profile_header)
    check_answer(*_request(live_server.port, "POST", "/v1/chat/completions", body, headers))


@SETTINGS
@given(query=queries, last_event_id=st.none() | st.sampled_from(["done", "3", "x"]))
def test_random_stream_queries_never_get_a_5xx(
    live_server: LiveServer, query: str, last_event_id: str | None
) -> None:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    check_answer(*_request(live_server.port, "GET", f"/v1/stream?{query}", None, headers))


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(st.text(max_size=12) | st.sampled_from(["..", ".", "%2e%2e", "v1",
                                                                   "models", "static"]),
                         max_size=5),
       query=queries)
def test_random_paths_never_get_a_5xx(
    live_server: LiveServer, segments: list[str], query: str
) -> None:
    path = "/" + "/".join(quote(segment, safe="%") for segment in segments)
    check_answer(*_request(live_server.port, "GET", f"{path}?{query}"))


def test_the_fuzzed_server_is_still_healthy(live_server: LiveServer) -> None:
    status, _, body = _request(live_server.port, "GET", "/healthz")
    assert status == 200
    health = json.loads(body)
    assert health["active_streams"] == 0
    assert health["stream_errors"] == 0
    assert live_server.app[STATE].stats.failed == 0
