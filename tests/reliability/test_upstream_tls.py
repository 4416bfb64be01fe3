"""An https:// upstream with a certificate from a CA of the test's own (trustme).

Verification is on by default, against the system's CAs: such an upstream is refused with
a 502 that names the TLS problem and the settings that fix it. ``upstream.ca_file`` trusts
its CA; ``upstream.verify_tls: false`` checks nothing.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer
from relhelp import assert_openai_error, make_app

from upstream_support import FakeUpstream, openai_text, parse_sse, reply_stream, streams

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
async def tls_upstream(aiohttp_server: AiohttpServer, ca: trustme.CA) -> tuple[FakeUpstream, str]:
    upstream = FakeUpstream(behaviour=streams(reply_stream(["Hello", " over TLS"])))
    server = await aiohttp_server(upstream.app(), ssl=server_context(ca))
    url = str(server.make_url("/v1"))
    assert url.startswith("https://127.0.0.1:")
    return upstream, url


def _app(base_url: str, **upstream: Any) -> web.Application:
    return make_app(upstream={"base_url": base_url, "api_key_env": "TOKENSTREAM_TEST_UNSET",
                              "profile": "instant", **upstream})


async def test_an_unknown_ca_is_refused_by_default_saying_why_and_what_to_set(
    aiohttp_client: AiohttpClient, tls_upstream: tuple[FakeUpstream, str]
) -> None:
    upstream, url = tls_upstream
    client = await aiohttp_client(_app(url))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 502
    error = assert_openai_error(await response.json(), "upstream_unreachable")
    message = str(error["message"])
    assert "TLS certificate" in message
    assert "certificate verify failed" in message or "local issuer" in message
    assert "upstream.ca_file" in message and "upstream.verify_tls" in message
    assert upstream.seen == []  # nothing was sent over the refused connection


@pytest.mark.parametrize("setting", ["ca_file", "verify_tls"])
async def test_the_upstream_is_reached_with_its_ca_or_without_verification(
    aiohttp_client: AiohttpClient,
    tls_upstream: tuple[FakeUpstream, str],
    ca_file: Path,
    setting: str,
) -> None:
    upstream, url = tls_upstream
    extra: dict[str, Any] = {"ca_file": str(ca_file)} if setting == "ca_file" else {
        "verify_tls": False}
    client = await aiohttp_client(_app(url, **extra))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200
    assert openai_text(parse_sse(await response.read())) == "Hello over TLS"
    assert len(upstream.seen) == 1


async def test_the_ca_file_is_the_only_one_trusted(
    aiohttp_client: AiohttpClient, tls_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    _, url = tls_upstream
    client = await aiohttp_client(_app(url, ca_file=str(other)))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 502
    assert "TLS certificate" in str(assert_openai_error(await response.json())["message"])


async def test_https_to_a_plain_http_port_names_the_handshake(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer
) -> None:
    plain = await aiohttp_server(FakeUpstream().app())
    client = await aiohttp_client(_app(f"https://127.0.0.1:{plain.port}/v1"))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 502
    error = assert_openai_error(await response.json(), "upstream_unreachable")
    assert "TLS handshake" in str(error["message"])
