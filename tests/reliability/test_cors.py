"""CORS: preflight for POST /v1/chat/completions and the headers on actual (streamed) replies."""

from __future__ import annotations

from pytest_aiohttp import AiohttpClient
from relhelp import assert_openai_error, make_app

APP_ORIGIN = "http://localhost:5173"
KEY = "sk-test-0123456789abcdef"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _preflight(origin: str = APP_ORIGIN, method: str = "POST",
               headers: str = "content-type,authorization") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_preflight_for_chat_completions_allows_content_type_and_authorization(
    aiohttp_client: AiohttpClient,
) -> None:
    # keys are set: a preflight carries no Authorization and must pass anyway
    client = await aiohttp_client(make_app({"cors_origins": [APP_ORIGIN], "api_keys": [KEY]}))
    response = await client.options("/v1/chat/completions", headers=_preflight())
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"content-type", "authorization"}
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_preflight_allows_what_the_openai_js_sdk_sends(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app({"cors_origins": [APP_ORIGIN]}))
    sdk_headers = ("authorization,content-type,x-stainless-arch,x-stainless-lang,"
                   "x-stainless-os,x-stainless-package-version,x-stainless-retry-count,"
                   "x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout")
    response = await client.options("/v1/chat/completions", headers=_preflight(headers=sdk_headers))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Headers"] == ", ".join(sdk_headers.split(","))


async def test_preflight_allows_tokenstream_s_own_headers(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app({"cors_origins": [APP_ORIGIN]}))
    ours = "x-tokenstream-profile,x-tokenstream-session,x-tokenstream-test-id"
    response = await client.options("/v1/chat/completions", headers=_preflight(headers=ours))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Headers"] == ", ".join(ours.split(","))


async def test_actual_streamed_request_carries_allow_origin(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app({"cors_origins": [APP_ORIGIN], "api_keys": [KEY]}))
    response = await client.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {KEY}"},
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
    assert "Origin" in response.headers["Vary"]
    assert (await response.read()).endswith(b"data: [DONE]\n\n")

    # errors are readable by the page too
    refused = await client.post("/v1/chat/completions", json=CHAT, headers={"Origin": APP_ORIGIN})
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == APP_ORIGIN

    stream = await client.get("/v1/stream?prompt=hi", headers={
        "Origin": APP_ORIGIN, "Authorization": f"Bearer {KEY}"})
    assert stream.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    await stream.read()


async def test_other_origins_get_no_cors_headers(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app({"cors_origins": [APP_ORIGIN]}))
    preflight = await client.options(
        "/v1/chat/completions", headers=_preflight(origin="http://evil.example")
    )
    assert preflight.status == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    error = assert_openai_error(await preflight.json(), "cors_origin_not_allowed")
    assert "server.cors_origins" in str(error["message"])

    actual = await client.post("/v1/chat/completions", json=CHAT,
                               headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in actual.headers
    await actual.read()


async def test_default_allows_no_origin(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app())
    preflight = await client.options("/v1/chat/completions", headers=_preflight())
    assert preflight.status == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    actual = await client.get("/v1/models", headers={"Origin": APP_ORIGIN})
    assert "Access-Control-Allow-Origin" not in actual.headers


async def test_wildcard_allows_any_origin(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app({"cors_origins": ["*"]}))
    preflight = await client.options(
        "/v1/chat/completions", headers=_preflight(origin="https://app.example.com")
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_refused_preflights_say_why(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app({"cors_origins": [APP_ORIGIN]}))
    header = await client.options("/v1/chat/completions",
                                  headers=_preflight(headers="content-type,x-custom-thing"))
    assert header.status == 403
    error = assert_openai_error(await header.json(), "cors_header_not_allowed")
    assert "x-custom-thing" in str(error["message"])

    method = await client.options("/v1/chat/completions", headers=_preflight(method="DELETE"))
    assert method.status == 405
    assert_openai_error(await method.json(), "method_not_allowed")

    missing = await client.options("/v1/nothing-here", headers=_preflight())
    assert missing.status == 404
    assert_openai_error(await missing.json(), "not_found")

    get_route = await client.options("/v1/stream", headers=_preflight(method="GET", headers=""))
    assert get_route.status == 204
    assert get_route.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert "Access-Control-Allow-Headers" not in get_route.headers
