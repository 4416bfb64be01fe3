"""Every fault kind in the dialects that have an official Python SDK, judged by that SDK: it
raises what it raises against the real API, and a cut stream is seen as incomplete. The
server is left with no stream open (``/healthz``). Pacing runs on the FakeClock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer

from tokenstream.config import Config, ResumeConfig
from tokenstream.engine.clock import FakeClock
from tokenstream.server.app import create_app
from tokenstream.server.state import STATE

from support import scripted_reply

HELLO = scripted_reply("hello")


@dataclass
class Served:
    base: str
    clock: FakeClock

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base + "/v1", api_key="k", max_retries=0)

    def anthropic(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.base, api_key="k", max_retries=0)

    async def health(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.base + "/healthz") as r:
            health: dict[str, Any] = await r.json()
            return health


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    # a resumable reply whose client left goes on for resume.linger_s: here it stops at once
    app = create_app(Config(resume=ResumeConfig(linger_s=0)), clock=FakeClock(), environ={})
    server = TestServer(app)
    await server.start_server()
    clock = app[STATE].clock
    assert isinstance(clock, FakeClock)
    yield Served(str(server.make_url("")).rstrip("/"), clock)
    health = await Served(str(server.make_url("")).rstrip("/"), clock).health()
    assert health["active_streams"] == 0  # nothing left open, whatever the fault did
    await server.close()


def _fault(spec: str) -> dict[str, Any]:
    return {"tokenstream": {"fault": spec}}


@dataclass
class Got:
    text: str = ""
    finish: str | None = None
    error: BaseException | None = None
    events: list[str] | None = None


async def _chat(served: Served, spec: str) -> Got:
    got = Got()
    try:
        async with served.openai() as client:
            stream = await client.chat.completions.create(
                model="tokenstream-1", messages=[{"role": "user", "content": "hello"}],
                stream=True, extra_body=_fault(spec),
            )
            async for chunk in stream:
                if chunk.choices:
                    got.text += chunk.choices[0].delta.content or ""
                    got.finish = chunk.choices[0].finish_reason or got.finish
    except Exception as exc:  # what the SDK raised is the point
        got.error = exc
    return got


async def _responses(served: Served, spec: str) -> Got:
    got = Got(events=[])
    try:
        async with served.openai() as client:
            stream = await client.responses.create(
                model="tokenstream-1", input="hello", stream=True, extra_body=_fault(spec)
            )
            async for event in stream:
                assert got.events is not None
                got.events.append(event.type)
                if event.type == "response.output_text.delta":
                    got.text += event.delta
                elif event.type in ("response.completed", "response.incomplete"):
                    got.finish = event.response.status
    except Exception as exc:
        got.error = exc
    return got


async def _messages(served: Served, spec: str) -> Got:
    got = Got()
    try:
        async with served.anthropic() as client, client.messages.stream(
            model="tokenstream-1", max_tokens=1024,
            messages=[{"role": "user", "content": "hello"}], extra_body=_fault(spec),
        ) as stream:
            async for text in stream.text_stream:
                got.text += text
            got.finish = (await stream.get_final_message()).stop_reason
    except Exception as exc:
        got.error = exc
    return got


CLIENTS = {"chat": _chat, "responses": _responses, "messages": _messages}


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_429_before_the_stream_is_the_sdks_rate_limit_error(
    served: Served, client: str
) -> None:
    got = await CLIENTS[client](served, "error:429@0")
    error = got.error
    assert isinstance(error, openai.RateLimitError | anthropic.RateLimitError)
    headers = error.response.headers
    assert headers["retry-after"] == "1"
    if client != "messages":
        assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "error:429@0" in error.message
    assert got.text == ""


@pytest.mark.parametrize(("client", "raised"), [
    ("chat", openai.InternalServerError), ("responses", openai.InternalServerError),
    ("messages", anthropic.OverloadedError),
])
async def test_a_529_before_the_stream(
    served: Served, client: str, raised: type[Exception]
) -> None:
    got = await CLIENTS[client](served, "error:529@0")
    assert isinstance(got.error, raised)
    assert got.error.status_code == 529  # type: ignore[attr-defined]
    if client == "messages":
        assert got.error.body["error"]["type"] == "overloaded_error"  # type: ignore[attr-defined]


async def test_a_500_after_five_tokens_is_an_error_event_after_them(served: Served) -> None:
    chat = await _chat(served, "error:500@5")
    assert isinstance(chat.error, openai.APIError)
    assert "error:500@5" in chat.error.message
    assert HELLO.startswith(chat.text) and chat.text and chat.finish is None

    messages = await _messages(served, "error:500@5")
    assert isinstance(messages.error, anthropic.APIStatusError)
    assert "error:500@5" in str(messages.error)
    assert HELLO.startswith(messages.text) and messages.text

    # the Responses SDK hands the error event on as an event, as it does the real API's
    responses = await _responses(served, "error:500@5")
    assert responses.events is not None and responses.events[-1] == "error"
    assert responses.finish is None and HELLO.startswith(responses.text) and responses.text


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_truncated_stream_is_seen_as_incomplete(served: Served, client: str) -> None:
    got = await CLIENTS[client](served, "truncate@5")
    assert HELLO.startswith(got.text) and 0 < len(got.text) < len(HELLO)
    if client == "responses":
        assert got.error is None and got.finish is None  # no response.completed
    else:
        assert got.error is None
        assert got.finish is None  # no finish_reason, no stop_reason: the client can tell


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_reset_is_a_connection_error(served: Served, client: str) -> None:
    got = await CLIENTS[client](served, "reset@5")
    assert isinstance(got.error, openai.APIConnectionError | anthropic.APIConnectionError)


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_malformed_event_fails_the_sdks_json_parse(served: Served, client: str) -> None:
    got = await CLIENTS[client](served, "malformed@3")
    assert isinstance(got.error, json.JSONDecodeError)


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_duplicated_event_repeats_its_text(served: Served, client: str) -> None:
    got = await CLIENTS[client](served, "duplicate@3")
    assert got.error is None
    assert got.text == "Hello! I I'm" + HELLO[len("Hello! I'm"):]  # the 3rd token twice


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_stall_pauses_the_stream_and_loses_nothing(
    served: Served, client: str
) -> None:
    got = await CLIENTS[client](served, "stall:2.5s@3")
    assert got.error is None and got.text == HELLO
    # the events after the third token waited for the stall's end on the pacing clock
    assert any(deadline >= 2.5 for deadline in served.clock.sleeps)


@pytest.mark.parametrize("client", CLIENTS)
async def test_slow_headers_delay_everything(served: Served, client: str) -> None:
    got = await CLIENTS[client](served, "slow_headers:4s")
    assert got.error is None and got.text == HELLO
    assert served.clock.sleeps[0] == pytest.approx(4.0)


async def test_a_fault_at_a_time_acts_on_the_paced_stream(served: Served) -> None:
    """At 50 tokens/s (the fast profile's pace is higher: this one is set), 0.1 s is five
    tokens in."""
    async with served.openai() as client:
        stream = await client.chat.completions.create(
            model="tokenstream-1", messages=[{"role": "user", "content": "hello"}],
            stream=True, extra_body={"tokenstream": {
                "fault": "truncate@0.1s", "tokens_per_second": 50, "ttft_ms": 0,
                "jitter": 0, "pause_ms": 0}},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert HELLO.startswith(text) and 3 <= len(text) < len(HELLO)


async def test_the_header_names_a_fault_too(served: Served) -> None:
    async with served.openai() as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="tokenstream-1", messages=[{"role": "user", "content": "hello"}],
                extra_headers={"X-Tokenstream-Fault": "error:429@0"},
            )


@pytest.mark.parametrize("spec", ["boom@1", "error@1", "stall@3", "truncate@x"])
async def test_a_bad_fault_is_a_400_naming_it(served: Served, spec: str) -> None:
    async with served.openai() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="tokenstream-1", messages=[{"role": "user", "content": "hello"}],
                extra_body=_fault(spec),
            )
    assert caught.value.body["param"] == "tokenstream.fault"  # type: ignore[index]


async def test_whole_answers_get_the_error_and_the_dropped_connection(served: Served) -> None:
    async with served.openai() as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="tokenstream-1", messages=[{"role": "user", "content": "hello"}],
                extra_body=_fault("error:503@10"),
            )
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(
                model="tokenstream-1", messages=[{"role": "user", "content": "hello"}],
                extra_body=_fault("reset@10"),
            )


async def test_get_stream_takes_fault_in_its_query(served: Served) -> None:
    async with aiohttp.ClientSession() as session, session.get(
        served.base + "/v1/stream", params={"prompt": "hello", "fault": "duplicate@1"}
    ) as response:
        body = await response.text()
    first = body.split("\n\n")[0]
    assert body.count(first + "\n\n") == 2  # the first event twice


async def _chaos_run(spec: str) -> list[str]:
    """What a client saw of 12 streams under chaos ``spec``, against a fresh server."""
    # a resumable reply whose client left goes on for resume.linger_s: here it stops at once
    app = create_app(Config(resume=ResumeConfig(linger_s=0)), clock=FakeClock(), environ={})
    server = TestServer(app)
    await server.start_server()
    served = Served(str(server.make_url("")).rstrip("/"), app[STATE].clock)  # type: ignore[arg-type]
    seen = []
    for _ in range(12):
        got = Got()
        try:
            async with served.openai() as client:
                stream = await client.chat.completions.create(
                    model="tokenstream-1", messages=[{"role": "user", "content": "hello"}],
                    stream=True, extra_headers={"X-Tokenstream-Chaos": spec},
                )
                async for chunk in stream:
                    if chunk.choices:
                        got.text += chunk.choices[0].delta.content or ""
                        got.finish = chunk.choices[0].finish_reason or got.finish
        except Exception as exc:
            got.error = exc
        seen.append(f"{type(got.error).__name__} {len(got.text)} {got.finish}")
    assert (await served.health())["active_streams"] == 0
    await server.close()
    return seen


async def test_seeded_chaos_repeats_exactly_across_runs() -> None:
    spec = "seed=11,error=0.25,truncate=0.25,duplicate=0.25,reset=0.1"
    first = await _chaos_run(spec)
    assert first == await _chaos_run(spec)
    assert len(set(first)) > 2  # faults of several kinds happened
    assert any(line.startswith("NoneType") and line.endswith("stop") for line in first)
