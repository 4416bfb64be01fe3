"""Inbound API keys: 401 in the OpenAI shape, open paths, constant-time compare, key sources."""

from __future__ import annotations

import hmac
from pathlib import Path

import openai
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient
from relhelp import assert_openai_error, make_app, make_config

from tokenstream.errors import ConfigError
from tokenstream.server import auth
from tokenstream.server.auth import KeyChecker, load_api_keys, path_is_open, public_bind_warning
from tokenstream.server.ui import load_static_files

KEY = "sk-test-0123456789abcdef"
OTHER_KEY = "sk-other-9876543210"


def _with_metrics(app: web.Application) -> web.Application:
    """A stand-in /metrics route (the real one is another module's): auth must cover it."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="tokenstream_up 1\n")

    app.router.add_get("/metrics", metrics)
    return app


async def test_requests_without_a_valid_key_get_401_in_openai_shape(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(make_app({"api_keys": [KEY, OTHER_KEY]}))
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    missing = await client.post("/v1/chat/completions", json=chat)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert_openai_error(await missing.json(), "missing_api_key")

    for header in (f"Bearer {KEY}x", "Bearer ", f"Basic {KEY}", KEY, f"Bearer {KEY[:-1]}"):
        wrong = await client.post("/v1/chat/completions", json=chat,
                                  headers={"Authorization": header})
        assert wrong.status == 401, header
        body = await wrong.text()
        assert KEY not in body and KEY[:-1] not in body  # the error never echoes the key
        assert_openai_error(await wrong.json())

    for key in (KEY, OTHER_KEY):
        ok = await client.post("/v1/chat/completions", json=chat,
                               headers={"Authorization": f"Bearer {key}"})
        assert ok.status == 200
        assert (await ok.read()).endswith(b"data: [DONE]\n\n")
    lower = await client.get("/v1/models", headers={"Authorization": f"bearer {KEY}"})
    assert lower.status == 200

    for path in ("/v1/models", "/v1/profiles", "/v1/stream?prompt=hi", "/v1/models/x"):
        assert (await client.get(path)).status == 401, path


async def test_healthz_and_static_page_stay_open_and_metrics_is_protected(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(_with_metrics(make_app({"api_keys": [KEY]})))
    assert (await client.get("/healthz")).status == 200
    page = await client.get("/")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    for name in load_static_files():
        assert (await client.get(f"/static/{name}")).status == 200, name
    assert (await client.get("/static/missing.js")).status == 404  # open, so 404, not 401
    assert (await client.get("/metrics")).status == 401
    authorized = await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert authorized.status == 200


async def test_metrics_can_be_opened_by_config(aiohttp_client: AiohttpClient) -> None:
    app = _with_metrics(make_app({"api_keys": [KEY], "open_paths": ["/healthz", "/metrics"]}))
    client = await aiohttp_client(app)
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/v1/models")).status == 401


async def test_no_keys_means_open(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app())
    assert (await client.get("/v1/models")).status == 200
    assert (await client.get("/v1/models", headers={"Authorization": "Bearer any"})).status == 200


async def test_openai_sdk_authenticates_with_a_configured_key(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(make_app({"api_keys": [KEY]}))
    base_url = str(client.make_url("/v1"))
    good = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    stream = await good.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.startswith("Hello!")
    bad = openai.AsyncOpenAI(base_url=base_url, api_key="sk-wrong-key-123", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        await bad.models.list()
    assert raised.value.code == "invalid_api_key"
    await good.close()
    await bad.close()


def test_keys_from_config_file_and_environment_are_all_accepted(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# team keys\n{OTHER_KEY}\n\nsk-file-second-key  # ci\n")
    config = make_config({"api_keys": [KEY], "api_keys_file": "keys.txt"})
    config = config.model_copy(update={"base_dir": tmp_path})
    keys = load_api_keys(config, {"TOKENSTREAM_API_KEYS": "sk-env-one-1234, sk-env-two-5678"})
    assert keys == [KEY, OTHER_KEY, "sk-file-second-key", "sk-env-one-1234", "sk-env-two-5678"]


def test_missing_keys_file_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    config = make_config({"api_keys_file": "nope.txt"}).model_copy(update={"base_dir": tmp_path})
    with pytest.raises(ConfigError) as raised:
        load_api_keys(config, {})
    assert "server.api_keys_file" in str(raised.value)
    assert "nope.txt" in str(raised.value)


def test_malformed_key_in_environment_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as raised:
        load_api_keys(make_config(), {"TOKENSTREAM_API_KEYS": "tiny"})
    assert "TOKENSTREAM_API_KEYS" in str(raised.value)
    assert "tiny" not in str(raised.value)


def test_every_stored_key_is_compared_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the time taken does not tell which key (or whether one) matched."""
    keys = [f"sk-key-number-{n:04d}" for n in range(5)]
    checker = KeyChecker(keys)
    calls: list[int] = []
    compare_digest = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a))
        return compare_digest(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented, expected in ((keys[0], True), (keys[4], True), ("sk-nope-000000", False),
                                ("x", False), ("y" * 5000, False)):
        calls.clear()
        assert checker.accepts(presented) is expected
        assert calls == [32] * 5  # one fixed-length digest comparison per stored key


def test_key_checker_holds_no_key_in_its_repr() -> None:
    checker = KeyChecker([KEY])
    assert KEY not in repr(checker)
    assert KEY.encode() not in b"".join(checker._digests)  # only hashes are kept
    config = make_config({"api_keys": [KEY]})
    assert KEY not in repr(config) and KEY not in str(config.model_dump())


@pytest.mark.parametrize(
    ("path", "is_open"),
    [("/healthz", True), ("/", True), ("/static/app.js", True), ("/static", False),
     ("/metrics", False), ("/v1/models", False), ("/healthz/x", False)],
)
def test_open_paths_match_exactly_or_by_prefix(path: str, is_open: bool) -> None:
    assert path_is_open(path, ["/", "/healthz", "/static/*"]) is is_open


@pytest.mark.parametrize(
    ("host", "has_keys", "warns"),
    [("127.0.0.1", False, False), ("::1", False, False), ("localhost", False, False),
     ("127.0.0.5", False, False), ("0.0.0.0", False, True), ("::", False, True),
     ("192.168.1.10", False, True), ("example.org", False, True), ("0.0.0.0", True, False)],
)
def test_public_bind_without_keys_warns(host: str, has_keys: bool, warns: bool) -> None:
    warning = public_bind_warning(host, has_keys)
    assert (warning is not None) is warns
    if warning:
        assert host in warning and "server.api_keys" in warning
