"""The control API (``/_tokenstream/``): the request journal (what it holds, and never a
secret), run-time rules validated as the config's, scoping by ``X-Tokenstream-Test-Id``
between tests that run at once, the bounds, and the API keys in front of it all."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tokenstream.config import validate_mapping
from tokenstream.engine.clock import FakeClock
from tokenstream.server.app import STATE, create_app

KEY = "sk-journal-test-0123456789"
COOKIE = "session=c00kie-secret-value"

Client = TestClient[web.Request, web.Application]


def _app(**sections: Any) -> web.Application:
    data = {"server": {"heartbeat_s": 0}, "default_profile": "instant", **sections}
    return create_app(validate_mapping(data, "<test>"), clock=FakeClock(), environ={})


def _chat(prompt: str, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], **fields}


async def _journal(client: Client, **params: str) -> list[dict[str, Any]]:
    answer = await client.get("/_tokenstream/journal", params=params,
                              headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status == 200, await answer.text()
    entries: list[dict[str, Any]] = (await answer.json())["entries"]
    return entries


async def test_the_journal_holds_each_request_and_no_secret(
    aiohttp_client: AiohttpClient,
) -> None:
    rules = [{"match": "weather", "reply": "Sunny.", "fault": "duplicate@1"},
             {"match": "hello", "reply": "Hi there!"}]
    client = await aiohttp_client(_app(server={"heartbeat_s": 0, "api_keys": [KEY]},
                                       responses={"rules": rules}))
    secret_headers = {"Authorization": f"Bearer {KEY}", "x-api-key": KEY, "Cookie": COOKIE,
                      "Proxy-Authorization": f"Basic {KEY}", "X-Tokenstream-Test-Id": "t-1"}
    streamed = await client.post("/v1/chat/completions", headers=secret_headers,
                                 json=_chat("hello", stream=True))
    await streamed.read()
    whole = await client.post("/v1/messages", headers={"x-api-key": KEY}, json={
        "model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "weather"}]})
    await whole.read()
    await (await client.get("/v1/stream", params={"prompt": "hi there", "format": "json"},
                            headers={"Authorization": f"Bearer {KEY}"})).read()
    await (await client.post("/v1/chat/completions", data=b"{not json",
                             headers={"Authorization": f"Bearer {KEY}"})).read()
    await (await client.get("/v1/models")).read()  # no key: 401

    text = json.dumps(await _journal(client))
    assert KEY not in text and "c00kie" not in text  # nowhere, in any form
    chat, message, stream, bad, refused = json.loads(text)

    assert chat["method"] == "POST" and chat["path"] == "/v1/chat/completions"
    assert chat["dialect"] == "openai-chat" and chat["test_id"] == "t-1"
    for name in ("Authorization", "x-api-key", "Cookie", "Proxy-Authorization"):
        assert chat["headers"][name] == "[redacted]"
    assert chat["headers"]["X-Tokenstream-Test-Id"] == "t-1"
    assert chat["body"] == _chat("hello", stream=True)
    assert chat["rule"] == {"source": "config", "index": 1, "name": "responses.rules.1"}
    assert (chat["call"], chat["fault"], chat["status"]) == (1, None, 200)
    assert (chat["stream"], chat["outcome"]) == (True, "completed")
    assert chat["tokens"] == 3  # "Hi", " there", "!"
    assert chat["time"].endswith("+00:00") and chat["id"] < message["id"]

    assert message["dialect"] == "anthropic" and message["headers"]["x-api-key"] == "[redacted]"
    assert message["rule"]["index"] == 0 and message["fault"] == "duplicate@1"
    assert (message["stream"], message["outcome"]) == (False, "ok")

    assert stream["dialect"] == "stream" and stream["body"] is None
    assert stream["query"] == {"prompt": "hi there", "format": "json"}
    assert stream["rule"] is None and stream["call"] == 1  # the default reply
    assert stream["tokens"] > 5

    assert bad["dialect"] == "openai-chat" and (bad["status"], bad["outcome"]) == (400, "error")
    assert bad["body"] == "{not json" and bad["body_truncated"] is False
    assert bad["rule"] is None and bad["call"] is None  # refused before any rule was asked

    assert refused["path"] == "/v1/models" and refused["status"] == 401
    assert refused["dialect"] is None


async def test_bodies_are_cut_and_entries_bounded(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(_app(control={"max_journal_entries": 3,
                                                "max_journal_body_bytes": 100}))
    long_prompt = "你好" * 500
    for number in range(5):
        prompt = long_prompt if number == 4 else f"number {number}"
        await (await client.post("/v1/chat/completions", json=_chat(prompt))).read()
    entries = await _journal(client)
    assert [entry["id"] for entry in entries] == [3, 4, 5]  # the newest, oldest first
    assert entries[0]["body"]["messages"][0]["content"] == "number 2"
    cut = entries[-1]
    assert cut["body_truncated"] is True and cut["body_bytes"] > 3000
    assert len(cut["body"].encode()) <= 100 + 3  # a CJK character cut in two: U+FFFD
    assert [e["id"] for e in await _journal(client, limit="2")] == [4, 5]
    assert await _journal(client, limit="0") == []


async def test_deleting_the_journal_and_control_calls_not_journaled(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(_app())
    for test_id in ("a", "b", "a"):
        await (await client.get("/v1/stream", params={"prompt": "x"},
                                headers={"X-Tokenstream-Test-Id": test_id})).read()
    assert len(await _journal(client)) == 3
    deleted = await client.delete("/_tokenstream/journal", headers={"X-Tokenstream-Test-Id": "a"})
    assert await deleted.json() == {"deleted": 2}
    assert [e["test_id"] for e in await _journal(client)] == ["b"]
    assert await (await client.delete("/_tokenstream/journal")).json() == {"deleted": 1}
    assert await _journal(client) == []
    bad = await client.get("/_tokenstream/journal", params={"limit": "-1"})
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "limit"


async def _post_rules(client: Client, rules: Any, test_id: str | None = None) -> Any:
    headers = {"X-Tokenstream-Test-Id": test_id} if test_id else {}
    return await client.post("/_tokenstream/rules", json=rules, headers=headers)


async def _reply(client: Client, prompt: str, test_id: str | None = None) -> str:
    headers = {"X-Tokenstream-Test-Id": test_id} if test_id else {}
    answer = await client.post("/v1/chat/completions", json=_chat(prompt), headers=headers)
    content: str = (await answer.json())["choices"][0]["message"]["content"]
    return content


async def test_two_tests_at_once_see_only_their_own_rules_sequences_and_journal(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(_app(responses={"rules": [{"reply": "config"}]}))

    async def a_test(test_id: str) -> list[str]:
        added = await _post_rules(client, [
            {"match": "again", "reply": f"{test_id}: again"},
            {"call": 1, "reply": f"{test_id}: first"},
        ], test_id)
        assert added.status == 201
        replies = []
        for prompt in ("hello", "hello", "again"):
            replies.append(await _reply(client, prompt, test_id))
            await asyncio.sleep(0)  # let the other test in between
        return replies

    one, two = await asyncio.gather(a_test("t1"), a_test("t2"))
    assert one == ["t1: first", "config", "t1: again"]
    assert two == ["t2: first", "config", "t2: again"]
    assert await _reply(client, "again") == "config"  # no test id: no test's rules

    entries = await _journal(client, test_id="t1")
    assert len(entries) == 3 and {e["test_id"] for e in entries} == {"t1"}
    assert [e["rule"]["source"] for e in entries] == ["runtime", "config", "runtime"]
    assert [e["call"] for e in entries] == [1, 2, 1]  # "again" is another conversation

    cleared = await client.delete("/_tokenstream/rules", headers={"X-Tokenstream-Test-Id": "t1"})
    assert await cleared.json() == {"deleted": 2}
    assert await _reply(client, "again", "t1") == "config"
    assert await _reply(client, "again", "t2") == "t2: again"  # the other test's rules stay
    # the cleared test's sequences start again
    await _post_rules(client, [{"call": 1, "reply": "t1: first again"}], "t1")
    assert await _reply(client, "hello", "t1") == "t1: first again"


async def test_rules_added_without_a_test_id_answer_everyone_newest_first(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(_app(responses={"rules": [{"reply": "config"}]}))
    first = await _post_rules(client, [{"match": "x", "reply": "older"}])
    assert await first.json() == {"added": [
        {"index": 1, "name": "runtime rule 1", "test_id": None}]}
    await _post_rules(client, [{"match": "x", "reply": "newer"}])
    assert await _reply(client, "x", "any-test") == "newer"
    assert await _reply(client, "x") == "newer"
    assert await (await client.delete("/_tokenstream/rules")).json() == {"deleted": 2}
    assert await _reply(client, "x") == "config"


@pytest.mark.parametrize(
    ("rules", "param", "reason"),
    [
        ([{"call": 0, "reply": "x"}], "rules.0.call", "give a call number from 1"),
        ([{"reply": "x"}, {"matchh": "y", "reply": "x"}], "rules.1.matchh", "unknown key"),
        ([{"match": "("}], "rules.0.match", "not a valid regular expression"),
        ([{"match": "x"}], "rules.0", "give 'reply', 'reply_file', 'tool_calls' or 'fault'"),
        ([{"fault": "explode@1"}], "rules.0.fault", "unknown kind 'explode'"),
        ([{"profile": "warp", "reply": "x"}], "rules.0.profile", "'warp' is not among"),
        ([{"reply_file": "/etc/passwd"}], "rules.0.reply_file", "gives its reply as 'reply'"),
        ([{"dialect": "soap", "reply": "x"}], "rules.0.dialect.0", "'openai-chat'"),
        ({"reply": "x"}, "rules", "a JSON list of rules"),
    ],
)
async def test_invalid_rules_are_refused_naming_the_key(
    aiohttp_client: AiohttpClient, rules: Any, param: str, reason: str
) -> None:
    client = await aiohttp_client(_app())
    answer = await _post_rules(client, rules)
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert (error["param"], error["code"]) == (param, "invalid_rule")
    assert param in error["message"] and reason in error["message"]
    assert len(client.app[STATE].scripted.runtime) == 0  # nothing of it was added
    not_json = await client.post("/_tokenstream/rules", data=b"[{")
    assert (await not_json.json())["error"]["code"] == "invalid_json"


async def test_runtime_rules_are_bounded(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(_app(control={"max_runtime_rules": 2},
                                       responses={"rules": [{"reply": "config"}]}))
    too_many = await _post_rules(client, [{"reply": str(n)} for n in range(3)])
    assert too_many.status == 400 and (await too_many.json())["error"]["code"] == "too_many_rules"
    for name in ("a", "b", "c"):
        await _post_rules(client, [{"match": name, "reply": name}])
    assert [await _reply(client, name) for name in "abc"] == ["config", "b", "c"]


async def test_the_control_api_is_behind_the_keys(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(_app(server={"heartbeat_s": 0, "api_keys": [KEY]}))
    calls = [("GET", "journal"), ("DELETE", "journal"), ("POST", "rules"), ("DELETE", "rules")]
    for method, path in calls:
        refused = await client.request(method, f"/_tokenstream/{path}", json=[])
        assert refused.status == 401, path
        wrong = await client.request(method, f"/_tokenstream/{path}", json=[],
                                     headers={"Authorization": "Bearer sk-not-the-key-000"})
        assert wrong.status == 401, path
        allowed = await client.request(method, f"/_tokenstream/{path}", json=[],
                                       headers={"Authorization": f"Bearer {KEY}"})
        assert allowed.status in (200, 201), path


async def test_the_control_api_can_be_turned_off(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(_app(control={"enabled": False}))
    await (await client.get("/v1/stream", params={"prompt": "x"})).read()
    assert (await client.get("/_tokenstream/journal")).status == 404
    assert (await _post_rules(client, [{"reply": "x"}])).status == 404
    assert len(client.app[STATE].journal) == 0
