"""Scripted rules over HTTP: every route describes its request to the rules (dialect, model,
system prompt, tools, headers), a rule's profile paces its reply, and strict mode refuses an
unmatched request in each dialect's own error shape, as the official SDKs read it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from tokenstream.config import validate_mapping
from tokenstream.engine.clock import FakeClock
from tokenstream.server.app import create_app

from support import parse_sse

STEADY_TEN = {"tokens_per_second": 10, "ttft_ms": 500, "jitter": 0, "pause_ms": 0,
              "newline_pause_ms": None}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


def _app(**sections: Any) -> web.Application:
    data = {"server": {"heartbeat_s": 0}, "default_profile": "instant", **sections}
    return create_app(validate_mapping(data, "<test>"), clock=FakeClock(), environ={})


def _chat(prompt: str, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], **fields}


_POSTS: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "openai-chat": ("/v1/chat/completions", lambda p: _chat(p, stream=True)),
    "openai-responses": ("/v1/responses", lambda p: {"model": "m", "input": p, "stream": True}),
    "anthropic": ("/v1/messages", lambda p: {"model": "m", "max_tokens": 100, "stream": True,
                                             "messages": [{"role": "user", "content": p}]}),
    "ai-sdk-ui": ("/api/chat", lambda p: {"messages": [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": p}]}]}),
}
DIALECTS = [*_POSTS, "stream"]

Client = TestClient[web.Request, web.Application]


async def _ask(client: Client, dialect: str, prompt: str, **headers: str) -> Any:
    if dialect == "stream":
        return await client.get("/v1/stream", params={"prompt": prompt}, headers=headers)
    path, body = _POSTS[dialect]
    return await client.post(path, json=body(prompt), headers=headers)


async def _journal(client: Client) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await (await client.get("/_tokenstream/journal")).json())[
        "entries"]
    return entries


async def test_every_route_names_its_dialect_to_the_rules(
    aiohttp_client: AiohttpClient,
) -> None:
    rules = [{"dialect": name, "reply": f"for {name}"} for name in DIALECTS]
    client = await aiohttp_client(_app(responses={"rules": rules, "strict": True}))
    for name in DIALECTS:
        answer = await _ask(client, name, "hi")
        assert answer.status == 200, await answer.text()
        await answer.read()
    entries = await _journal(client)
    assert [e["dialect"] for e in entries] == DIALECTS
    assert [e["rule"]["index"] for e in entries] == list(range(len(DIALECTS)))


async def test_routes_give_the_model_system_prompt_tools_and_headers(
    aiohttp_client: AiohttpClient,
) -> None:
    rules = [
        {"model": "gpt-4o.*", "system": "(?i)pirate", "reply": "Arr."},
        {"tool": "get_weather", "reply": "a tool is offered"},
        {"headers": {"X-Env": "^ci$"}, "reply": "in CI"},
        {"reply": "anything else"},
    ]
    client = await aiohttp_client(_app(responses={"rules": rules}))
    pirate = _chat("hi", model="gpt-4o-mini")
    pirate["messages"].insert(0, {"role": "system", "content": "You are a pirate."})
    await client.post("/v1/chat/completions", json=pirate)
    await client.post("/v1/messages", json={
        "model": "gpt-4o", "max_tokens": 10, "system": "Speak like a PIRATE.",
        "messages": [{"role": "user", "content": "hi"}]})
    await client.post("/v1/responses", json={
        "model": "gpt-4o", "instructions": "pirate", "input": "hi"})
    await client.post("/v1/chat/completions", json=_chat("hi", tools=[TOOL]))
    await client.post("/v1/responses", json={"model": "m", "input": "hi", "tools": [
        {"type": "function", "name": "get_weather", "parameters": {}}]})
    await client.post("/v1/messages", json={
        "model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]})
    await client.get("/v1/stream", params={"prompt": "hi"}, headers={"x-env": "ci"})
    await client.post("/v1/chat/completions", json=_chat("hi", model="gpt-4o"))
    entries = await _journal(client)
    assert [e["status"] for e in entries] == [200] * 8
    assert [e["rule"]["index"] for e in entries] == [0, 0, 0, 1, 1, 1, 2, 3]


async def test_a_rule_s_profile_paces_its_reply_unless_the_request_names_one(
    aiohttp_client: AiohttpClient,
) -> None:
    rules = [{"match": "paced", "reply": "one two three four five", "profile": "ten"},
             {"reply": "unpaced"}]
    client = await aiohttp_client(_app(profiles={"ten": STEADY_TEN}, responses={"rules": rules}))
    paced = await client.get("/v1/stream", params={"prompt": "paced", "format": "json"})
    tokens = [e for e in parse_sse(await paced.read()) if e.data != "[DONE]"]
    await (await client.get("/v1/stream", params={"prompt": "paced"},
                            headers={"X-Tokenstream-Profile": "instant"})).read()
    await (await client.get("/v1/stream", params={"prompt": "paced", "ttft_ms": 0})).read()
    await (await client.get("/v1/stream", params={"prompt": "other"})).read()
    first, named, overridden, other = await _journal(client)
    assert first["duration_ms"] == pytest.approx(500 + (len(tokens) - 1) * 100, abs=0.2)
    assert named["duration_ms"] == 0  # the request's profile wins
    assert overridden["duration_ms"] == pytest.approx((len(tokens) - 1) * 100, abs=0.2)
    assert other["duration_ms"] == 0  # the default profile


def _strict_app() -> web.Application:
    return _app(responses={"strict": True, "rules": [
        {"match": "weather", "model": "gpt-.*", "reply": "sunny"},
        {"match": "weather", "dialect": "anthropic", "call": {"from": 2}, "reply": "later"},
    ]})


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_strict_mode_answers_404_in_the_dialect_s_shape(
    aiohttp_client: AiohttpClient, dialect: str
) -> None:
    client = await aiohttp_client(_strict_app())
    answer = await _ask(client, dialect, "What is the weather?")
    assert answer.status == 404
    closest = "The closest rule is responses.rules.0, which failed 1 condition: model: 'm'"
    if dialect == "ai-sdk-ui":  # the SDK shows a failed response's text as the error
        assert answer.content_type == "text/plain"
        message = await answer.text()
    elif dialect == "anthropic":
        body = await answer.json()
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
        message = body["error"]["message"]
    else:
        error = (await answer.json())["error"]
        assert (error["code"], error["type"]) == ("no_matching_rule", "not_found_error")
        message = error["message"]
    if dialect in ("stream", "ai-sdk-ui"):  # no model in the request: the first of `models`
        closest = closest.replace("'m'", "'tokenstream-1'")
    assert message.startswith("No rule matches this request (responses.strict is on).")
    assert closest in message
    (entry,) = await _journal(client)
    assert (entry["status"], entry["outcome"], entry["rule"]) == (404, "error", None)


@pytest.fixture
async def strict_server() -> AsyncIterator[TestServer]:
    server = TestServer(_strict_app())
    await server.start_server()
    yield server
    await server.close()


async def test_the_openai_sdk_raises_not_found_with_the_code(strict_server: TestServer) -> None:
    client = openai.AsyncOpenAI(base_url=str(strict_server.make_url("/v1")), api_key="k",
                                max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "news?"}], stream=True)
    assert caught.value.code == "no_matching_rule"
    assert "match: the last user message has no match for 'weather'" in caught.value.message
    await client.close()


async def test_the_anthropic_sdk_raises_not_found(strict_server: TestServer) -> None:
    client = anthropic.AsyncAnthropic(base_url=str(strict_server.make_url("")), api_key="k",
                                      max_retries=0)
    with pytest.raises(anthropic.NotFoundError, match=r"No rule matches this request"):
        await client.messages.create(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": "weather"}])
    # the second call of the same conversation: the rule for calls from 2 answers
    message = await client.messages.create(
        model="claude", max_tokens=10, messages=[{"role": "user", "content": "weather"}])
    assert message.content[0].type == "text" and message.content[0].text == "later"
    await client.close()
