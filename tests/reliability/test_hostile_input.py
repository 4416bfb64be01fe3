"""Hostile input answers 4xx with an OpenAI-style JSON error: never a 500, never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient
from relhelp import assert_openai_error, make_app, parse_sse, raw_connect, read_to_end, running

from tokenstream.config.defaults import DEFAULT_REPLY
from tokenstream.server.app import STATE

CHAT = "/v1/chat/completions"


def _chat(**extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def _raw(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()


# (id, method, path, body, expected status, expected error code or None for "any")
CASES: list[tuple[str, str, str, bytes | None, int, str | None]] = [
    ("malformed json", "POST", CHAT, b'{"model": "m", "messages": [', 400, "invalid_json"),
    ("not an object", "POST", CHAT, b"[1, 2, 3]", 400, "invalid_type"),
    ("empty body", "POST", CHAT, b"", 400, "invalid_json"),
    ("invalid utf-8 body", "POST", CHAT, b'{"model": "m\xff\xfe"}', 400, "invalid_json"),
    ("lone surrogate escape", "POST", CHAT,
     b'{"model":"m","messages":[{"role":"user","content":"\\ud800"}]}', 400, None),
    ("messages wrong type", "POST", CHAT, _raw({"model": "m", "messages": "hi"}), 400,
     "invalid_value"),
    ("model wrong type", "POST", CHAT, _raw(_chat(model=42)), 400, "invalid_value"),
    ("role unknown", "POST", CHAT, _raw({"model": "m", "messages": [{"role": "x"}]}), 400,
     "invalid_value"),
    ("stream is a string", "POST", CHAT, _raw(_chat(stream="yes")), 400, "invalid_value"),
    ("huge max_tokens", "POST", CHAT, _raw(_chat(max_tokens=10**30)), 400, "invalid_value"),
    ("max_tokens 1e400", "POST", CHAT, b'{"model":"m","messages":[{"role":'
     b'"user","content":"hi"}],"max_tokens":1e400}', 400, "invalid_value"),
    ("integer with 5000 digits", "POST", CHAT,
     b'{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":' + b"9" * 5000 + b"}",
     400, "invalid_json"),
    ("negative max_tokens", "POST", CHAT, _raw(_chat(max_tokens=-1)), 400, "invalid_value"),
    ("NaN pacing", "POST", CHAT,
     b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
     b'"tokenstream":{"tokens_per_second":NaN}}', 400, "invalid_value"),
    ("Infinity pacing", "POST", CHAT,
     b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
     b'"tokenstream":{"ttft_ms":Infinity}}', 400, "invalid_value"),
    ("negative ttft", "POST", CHAT, _raw(_chat(tokenstream={"ttft_ms": -5})), 400,
     "invalid_value"),
    ("negative jitter", "POST", CHAT, _raw(_chat(tokenstream={"jitter": -0.1})), 400,
     "invalid_value"),
    ("zero chunk_tokens", "POST", CHAT, _raw(_chat(tokenstream={"chunk_tokens": 0})), 400,
     "invalid_value"),
    ("unknown pacing field", "POST", CHAT, _raw(_chat(tokenstream={"speed": 3})), 400,
     "unknown_parameter"),
    ("unknown profile", "POST", CHAT, _raw(_chat(tokenstream={"profile": "warp"})), 400,
     "profile_not_found"),
    ("unknown source", "POST", CHAT, _raw(_chat(tokenstream={"source": "internet"})), 400,
     "invalid_value"),
    ("query: invalid utf-8", "GET", "/v1/stream?prompt=%ff%fe", None, 400, "invalid_encoding"),
    ("query: overlong utf-8", "GET", "/v1/stream?prompt=%c0%af", None, 400, "invalid_encoding"),
    ("query: utf-8 surrogate", "GET", "/v1/stream?prompt=%ed%a0%80", None, 400,
     "invalid_encoding"),
    ("query: invalid utf-8 in a key", "GET", "/v1/stream?prompt=a&%ff=1", None, 400,
     "invalid_encoding"),
    ("query: invalid utf-8 elsewhere", "GET", "/v1/models?x=%ff", None, 400, "invalid_encoding"),
    ("query: NaN", "GET", "/v1/stream?prompt=a&tokens_per_second=nan", None, 400,
     "invalid_value"),
    ("query: inf", "GET", "/v1/stream?prompt=a&ttft_ms=inf", None, 400, "invalid_value"),
    ("query: negative", "GET", "/v1/stream?prompt=a&pause_ms=-1", None, 400, "invalid_value"),
    ("query: huge int", "GET", "/v1/stream?prompt=a&max_tokens=" + "9" * 400, None, 400,
     "invalid_value"),
    ("query: 1e400", "GET", "/v1/stream?prompt=a&chunk_tokens=1e400", None, 400,
     "invalid_value"),
    ("query: unknown profile", "GET", "/v1/stream?prompt=a&profile=nope", None, 400,
     "profile_not_found"),
    ("query: unknown format", "GET", "/v1/stream?prompt=a&format=xml", None, 400,
     "invalid_value"),
    ("query: event with newline", "GET", "/v1/stream?prompt=a&event=x%0Ay", None, 400,
     "invalid_value"),
    ("query: duplicate key", "GET", "/v1/stream?prompt=a&prompt=b", None, 400,
     "invalid_value"),
    ("query: missing prompt", "GET", "/v1/stream", None, 400, "missing_required_parameter"),
    ("traversal", "GET", "/../../etc/passwd", None, 404, None),
    ("encoded traversal", "GET", "/%2e%2e/%2e%2e/etc/passwd", None, 404, None),
    ("method not allowed", "DELETE", CHAT, None, 405, None),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_hostile_request_answers_4xx_json(
    aiohttp_client: AiohttpClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    code: str | None,
) -> None:
    client = await aiohttp_client(make_app())
    headers = {"Content-Type": "application/json"} if body is not None else {}
    response = await client.request(method, path, data=body, headers=headers)
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    text = await response.text()
    assert "Traceback" not in text
    error = assert_openai_error(json.loads(text), code)
    if error["param"] is not None:
        assert str(error["param"]) in str(error["message"]) or status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_regex_heavy_prompt_cannot_stall_the_scripted_rules(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A catastrophic-backtracking rule meets a hostile prompt: the rule times out, is skipped."""
    caplog.set_level(logging.WARNING, "tokenstream")
    app = make_app(responses={"rules": [
        {"match": r"^(\w+\s?)*$", "reply": "matched"},
        {"match": r"(x+x+)+y", "reply": "matched too"},
    ]})
    client = await aiohttp_client(app)
    for prompt in ("a" * 5000 + "!", "x" * 5000 + "!"):
        response = await client.post(CHAT, json={
            "model": "m", "messages": [{"role": "user", "content": prompt}],
        })
        assert response.status == 200
        assert (await response.json())["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert sum("timed out" in r.getMessage() for r in caplog.records) >= 2


async def test_a_megabyte_of_regex_metacharacters_is_just_text(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(make_app({"max_prompt_tokens": 0}))
    prompt = "((((((*+?[[[\\" * 70_000  # ~900 kB, under the 1 MiB body limit
    response = await client.post(CHAT, json={
        "model": "m", "messages": [{"role": "user", "content": prompt}], "stream": True,
    })
    assert response.status == 200
    assert parse_sse(await response.read())[-1].data == "[DONE]"


async def test_the_demo_page_files_cannot_be_escaped(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app())
    for path in (
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/..%5capp.py",
        "/static//etc/passwd",
        "/static/%00",
        "/static/app.js/../../app.py",
    ):
        response = await client.get(path)
        text = await response.text()
        assert "import" not in text and "[project]" not in text and "root:" not in text, path
        assert 400 <= response.status < 500, path
        assert response.headers["Content-Type"].startswith("application/json"), (path, text)
        assert_openai_error(json.loads(text))


async def test_a_mounted_static_directory_cannot_be_escaped(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """aiohttp's own static route (should one be added) behind the error middleware."""
    public = tmp_path / "public"
    public.mkdir()
    (public / "index.html").write_text("<p>page</p>")
    (tmp_path / "secret.txt").write_text("TOP-SECRET")
    app = make_app()
    app.router.add_static("/files/", public)
    client = await aiohttp_client(app)
    assert await (await client.get("/files/index.html")).text() == "<p>page</p>"
    for path in (
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/..%2fsecret.txt",
        "/files/%2e%2e%2fsecret.txt",
        "/files/" + str(tmp_path / "secret.txt"),
        "/files//" + str(tmp_path / "secret.txt"),
        "/files/public/../../secret.txt",
        "/files/%00/secret.txt",
    ):
        response = await client.get(path)
        text = await response.text()
        assert "TOP-SECRET" not in text, path
        assert 400 <= response.status < 500, path
        assert response.headers["Content-Type"].startswith("application/json"), (path, text)
        assert_openai_error(json.loads(text))
    # a name that stays inside the directory but does not exist: aiohttp's FileResponse
    # answers 404 with an empty body (it finds out only while sending), not our JSON
    missing = await client.get("/files/....//secret.txt")
    assert missing.status == 404
    assert await missing.read() == b""


async def test_non_ascii_bytes_in_the_request_line_never_reach_a_handler(
    aiohttp_client: AiohttpClient,
) -> None:
    """Raw bytes >= 0x80 are not HTTP; aiohttp's parser refuses them with 400 (plain text).

    The app never sees them, so they cannot be decoded into the prompt.
    """
    app = make_app()
    async with running(app) as (_, port, _runner):
        client = await raw_connect(port)
        await asyncio.get_running_loop().sock_sendall(
            client, b"GET /v1/stream?prompt=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answer = await read_to_end(client)
        client.close()
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    assert b"Traceback" not in answer
    assert app[STATE].stats.started == 0
