"""The access log: one structured line per request; levels; never a secret."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from pytest_aiohttp import AiohttpClient
from relhelp import FAST, guarded, held_app, make_app, parse_sse

from tokenstream.engine.clock import FakeClock
from tokenstream.server.accesslog import ACCESS_LOGGER, format_line
from tokenstream.server.app import STATE

from support import wait_for

KEY = "sk-secret-key-0123456789"
FILE_KEY = "sk-file-key-abcdefghij"
ENV_KEY = "sk-env-key-zyxwvutsrq"


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.access for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]


async def test_one_line_per_request_with_the_stream_facts(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(
        clock=FakeClock(),
        profiles={"ten": {**FAST, "tokens_per_second": 10, "ttft_ms": 500}},
        default_profile="ten",
    )
    client = await aiohttp_client(app)
    body = await (await client.get("/v1/stream", params={"prompt": "hello",
                                                         "format": "json"})).read()
    await (await client.get("/v1/models")).read()
    await (await client.post("/v1/chat/completions", data=b"{nope")).read()

    lines = _access(caplog)
    assert len(lines) == 3
    stream, models, bad = lines
    events = [json.loads(e.data) for e in parse_sse(body) if e.data != "[DONE]"]
    tokens = sum(event["tokens"] for event in events)
    assert stream == {
        "method": "GET", "path": "/v1/stream", "status": 200,
        # the paced time: 500 ms to the first event, then 100 ms per token after it
        "duration_ms": pytest.approx(500 + (tokens - events[0]["tokens"]) * 100, abs=0.2),
        "stream": True, "tokens": tokens,
        "outcome": "completed", "disconnected": False, "remote": "127.0.0.1",
    }
    assert models["status"] == 200 and models["stream"] is False and models["tokens"] == 0
    assert models["outcome"] == "ok"
    assert bad["status"] == 400 and bad["method"] == "POST" and bad["outcome"] == "error"
    message = next(r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER)
    assert message.startswith("access method=GET path=/v1/stream status=200 duration_ms=")
    assert "outcome=completed disconnected=false" in message


async def test_a_client_that_leaves_is_logged_as_disconnected(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app, clock = held_app()
    client = await aiohttp_client(app)
    response = await client.get("/v1/stream", params={"prompt": "x"})
    await wait_for(lambda: clock.sleepers == 1)
    await response.content.readuntil(b"\n\n")
    response.close()  # drop the connection mid-stream
    await guarded(app[STATE].streams.wait_idle())
    for _ in range(100):  # the access line is written as the handler unwinds
        if _access(caplog):
            break
        await asyncio.sleep(0)
    (line,) = _access(caplog)
    assert line["outcome"] == "disconnected" and line["disconnected"] is True
    assert line["status"] == 200 and line["stream"] is True and line["tokens"] >= 1


async def test_no_secret_is_ever_logged(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    """Keys from config, file and environment; right and wrong keys; every logger at DEBUG."""
    caplog.set_level(logging.DEBUG)
    app = make_app(
        {"api_keys": [KEY], "access_log_level": "DEBUG", "log_level": "DEBUG"},
        environ={"TOKENSTREAM_API_KEYS": ENV_KEY},
    )
    client = await aiohttp_client(app)
    chat = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": True}
    for key in (KEY, ENV_KEY, KEY + "-wrong", FILE_KEY):
        response = await client.post("/v1/chat/completions", json=chat,
                                     headers={"Authorization": f"Bearer {key}"})
        await response.read()
    await (await client.get("/v1/stream?prompt=the-prompt-text",
                            headers={"Authorization": f"Bearer {KEY}",
                                     "Cookie": "session=cookie-secret"})).read()
    await (await client.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwYXNz"})).read()

    assert len(_access(caplog)) == 6
    logged = caplog.text + "".join(
        repr(r.args) + repr(getattr(r, "access", "")) + str(r.exc_text) for r in caplog.records
    )
    for secret in (KEY, ENV_KEY, FILE_KEY, "dXNlcjpwYXNz", "cookie-secret", "Bearer",
                   "the-prompt-text"):
        assert secret not in logged, secret
    statuses = [line["status"] for line in _access(caplog)]
    assert statuses == [200, 200, 401, 401, 200, 401]


@pytest.mark.parametrize(("level", "seen"), [("OFF", False), ("DEBUG", False), ("WARNING", True)])
async def test_access_log_level_is_configurable(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture, level: str, seen: bool
) -> None:
    caplog.set_level(logging.INFO)  # captures INFO and above
    client = await aiohttp_client(make_app({"access_log_level": level}))
    await (await client.get("/healthz")).read()
    assert bool(_access(caplog)) is seen


def test_a_crafted_path_cannot_forge_a_log_line() -> None:
    line = format_line({"method": "GET", "path": '/x\naccess method=GET path="/admin', "ok": True})
    assert "\n" not in line
    assert line == 'method=GET path="/x\\naccess method=GET path=\\"/admin" ok=true'


async def test_an_injected_fault_is_in_the_line(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await aiohttp_client(make_app(clock=FakeClock()))
    await (await client.get("/v1/stream", params={"prompt": "hello",
                                                  "fault": "truncate@3"})).read()
    await (await client.get("/v1/stream", params={"prompt": "hello",
                                                  "fault": "error:429@0"})).read()
    cut, refused = _access(caplog)
    assert cut["outcome"] == "fault" and cut["fault"] == "truncate@3" and cut["tokens"] == 3
    assert refused["status"] == 429 and refused["fault"] == "error:429@0"
