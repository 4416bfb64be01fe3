"""Proxies from the environment: HTTP_PROXY and HTTPS_PROXY are used, NO_PROXY is honoured.

The environment is read when the app starts (``UpstreamClient.start``), so each test sets
it before its app is started.

A forward proxy on 127.0.0.1 counts what passes through it: absolute-form requests for an
http:// upstream, CONNECT tunnels for an https:// one.
"""

from __future__ import annotations

import base64
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer
from rawhttp import ForwardProxy
from relhelp import assert_openai_error, make_app

from upstream_support import FakeUpstream, openai_text, parse_sse, reply_stream, streams

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
BASIC = "Basic " + base64.b64encode(b"someone:pa55").decode()


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: none of the machine's own proxy settings."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _app(base_url: str, **upstream: Any) -> web.Application:
    return make_app(upstream={"base_url": base_url, "api_key_env": "TOKENSTREAM_TEST_UNSET",
                              "profile": "instant", **upstream})


async def _chat_text(client: Any) -> str:
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200, await response.text()
    return openai_text(parse_sse(await response.read()))


@pytest.mark.parametrize("no_proxy", [None, "127.0.0.1", "localhost,127.0.0.1"])
async def test_http_proxy_carries_the_request_unless_no_proxy_covers_the_host(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str | None,
) -> None:
    upstream = FakeUpstream(behaviour=streams(reply_stream(["Hello", " proxy"])))
    server = await aiohttp_server(upstream.app())
    proxy = ForwardProxy()
    async with proxy.serving():
        # credentials in the proxy's URL go to the proxy, not to the upstream
        monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("://", "://someone:pa55@"))
        if no_proxy is not None:
            monkeypatch.setenv("NO_PROXY", no_proxy)
        client = await aiohttp_client(_app(str(server.make_url("/v1"))))
        assert await _chat_text(client) == "Hello proxy"
    assert len(upstream.seen) == 1
    assert "Proxy-Authorization" not in upstream.seen[0].headers
    if no_proxy is None:
        assert proxy.absolute == [str(server.make_url("/v1/chat/completions"))]
        assert proxy.credentials == [BASIC]
    else:
        assert proxy.absolute == []
    assert proxy.connects == []


@pytest.mark.parametrize("no_proxy", [False, True])
async def test_https_proxy_tunnels_to_a_tls_upstream_unless_no_proxy_covers_it(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    no_proxy: bool,
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    upstream = FakeUpstream(behaviour=streams(reply_stream(["Hello", " tunnel"])))
    server = await aiohttp_server(upstream.app(), ssl=context)
    proxy = ForwardProxy()
    async with proxy.serving():
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("://", "://someone:pa55@"))
        if no_proxy:
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        client = await aiohttp_client(_app(str(server.make_url("/v1")), ca_file=str(ca_file)))
        assert await _chat_text(client) == "Hello tunnel"
    assert len(upstream.seen) == 1
    assert proxy.connects == ([] if no_proxy else [f"127.0.0.1:{server.port}"])
    assert proxy.credentials == ([] if no_proxy else [BASIC])
    assert proxy.absolute == []


async def test_an_unreachable_proxy_is_a_502_that_names_the_proxy_and_the_variables(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = FakeUpstream(behaviour=streams(reply_stream(["never"])))
    server = await aiohttp_server(upstream.app())
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    client = await aiohttp_client(_app(str(server.make_url("/v1"))))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 502
    error = assert_openai_error(await response.json(), "upstream_unreachable")
    assert f"proxy 127.0.0.1:{port}" in str(error["message"])
    assert "NO_PROXY" in str(error["message"])
    assert upstream.seen == []


async def test_a_proxy_that_is_not_an_http_url_is_not_used_and_says_so(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream = FakeUpstream(behaviour=streams(reply_stream(["direct"])))
    server = await aiohttp_server(upstream.app())
    monkeypatch.setenv("HTTP_PROXY", "127.0.0.1:3128")  # no scheme
    client = await aiohttp_client(_app(str(server.make_url("/v1"))))
    assert await _chat_text(client) == "direct"
    assert "HTTP_PROXY is not used: give it as http://HOST:PORT" in caplog.text
