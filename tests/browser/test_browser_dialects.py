"""The demo page's dialect selector in headless Chromium against a real ``tokenstream serve``:
each dialect streamed with fetch from its own endpoint and with EventSource from ``GET
/v1/stream?dialect=``, reasoning and tool calls shown, and the raw-event panel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tokenstream.dialects.catalog import DIALECTS
from tokenstream.dialects.openai_chat import OpenAIChunkFormat
from tokenstream.engine.events import Finish
from tokenstream.engine.tokenizer import Piece

from browser_support import Server, finish, last_reply, reply_text, send
from support import scripted_reply

pytestmark = pytest.mark.browser

CHINESE = scripted_reply("chinese")
EMOJI = scripted_reply("emoji")
VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "dialect_streams.json").read_text(encoding="utf-8")
)

OWN_EVENTS = {
    "openai-chat": {"message"},
    "openai-responses": {"response.created", "response.in_progress", "response.output_text.delta",
                         "response.output_item.done", "response.completed"},
    "anthropic": {"message_start", "content_block_start", "content_block_delta",
                  "content_block_stop", "message_delta", "message_stop"},
    "ai-sdk-ui": {"message"},  # data-only events: the part's type is in its JSON
}


def _raw_events(page: Page) -> list[tuple[str, str]]:
    """The raw-event panel's entries: (event type, data)."""
    if not page.locator("#raw-events").evaluate("panel => panel.open"):
        page.click("#raw-events summary")
    expect(page.locator("#raw-list")).to_be_visible()
    entries: list[list[str]] = page.locator("#raw-list li").evaluate_all(
        """items => items.map(item => [item.querySelector(".raw-type").textContent,
                                       item.querySelector(".raw-data").textContent])"""
    )
    return [(kind, data) for kind, data in entries]


@pytest.mark.parametrize("transport", ["fetch", "eventsource"])
@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize(
    ("prompt", "reply"), [("Say something in Chinese", CHINESE), ("emoji", EMOJI)],
    ids=["chinese", "emoji"],
)
def test_each_dialect_streams_into_the_page_exactly(
    page: Page, transport: str, dialect: str, prompt: str, reply: str
) -> None:
    if transport == "eventsource":
        page.check("#transport-eventsource")
        page.select_option("#es-format", "dialect")
    path = DIALECTS[dialect].path
    with page.expect_request(
        lambda r: r.url.endswith(path) or "/v1/stream?" in r.url
    ) as sent:
        send(page, prompt, transport=transport, dialect=dialect)
    finish(page)
    text = reply_text(page)
    assert "\ufffd" not in text
    assert text == reply
    assert last_reply(page).get_attribute("data-dialect") == dialect
    if transport == "fetch":
        assert sent.value.method == "POST" and sent.value.url.endswith(path)
    else:
        assert parse_qs(urlsplit(sent.value.url).query)["dialect"] == [dialect]
    stats = page.locator('#chat-stats [data-stat="events"]').inner_text()
    assert int(stats) > 1  # token by token

    events = _raw_events(page)
    assert OWN_EVENTS[dialect] <= {kind for kind, _ in events}
    if dialect == "openai-chat":
        assert '"object":"chat.completion.chunk"' in events[0][1]
    if dialect == "ai-sdk-ui":
        assert '"type":"start"' in events[0][1]
    if dialect in ("openai-chat", "ai-sdk-ui"):
        assert events[-1][1] == "[DONE]"
    assert page.locator("#raw-count").inner_text() == str(len(events))


@pytest.fixture
def dialects_page(browser: Browser, server: Server) -> Iterator[Page]:
    """The page, failing the test on an uncaught error in it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def _serve_events(page: Page, path: str, events: list[list[str]]) -> None:
    """Answer POST ``path`` with these events (instead of the server)."""
    body = "".join(
        (f"event: {kind}\n" if kind != "message" else "") + f"data: {data}\n\n"
        for kind, data in events
    )

    def fulfill(route: Route) -> None:
        route.fulfill(status=200, body=body.encode(),
                      headers={"Content-Type": "text/event-stream; charset=utf-8"})

    page.route(f"**{path}", fulfill)


@pytest.mark.parametrize("dialect", sorted(VECTORS["streams"]))
def test_reasoning_and_tool_calls_are_shown(dialects_page: Page, dialect: str) -> None:
    page = dialects_page
    path = DIALECTS[dialect].path
    _serve_events(page, path, VECTORS["streams"][dialect])
    send(page, "weather in Paris?", dialect=dialect)
    finish(page)
    reply = last_reply(page)
    expected = VECTORS["expected"]
    assert reply.locator(".reasoning-text").evaluate("n => n.textContent") == expected["reasoning"]
    assert reply_text(page) == expected["text"]
    (call,) = expected["tool_calls"]
    expect(reply.locator(".tool-call")).to_have_count(1)
    assert reply.locator(".tool-call").get_attribute("data-call-id") == call["id"]
    assert reply.locator(".tool-name").inner_text() == call["name"]
    assert reply.locator(".tool-arguments").evaluate("n => n.textContent") == call["arguments"]
    reason = VECTORS["finish_reasons"][dialect]
    if reason != "completed":  # the Responses API's status has no word for ending on a call
        assert f"finish {reason}" in reply.locator(".meta").inner_text()
    assert len(_raw_events(page)) == len(VECTORS["streams"][dialect])


def test_the_raw_event_panel_keeps_only_the_latest_events(page: Page) -> None:
    encoder = OpenAIChunkFormat(model="tokenstream-1", include_usage=False)
    pieces = [f" w{n}" for n in range(450)]
    raw = b"".join(encoder.piece(Piece(text)) for text in pieces)
    raw += encoder.event(Finish("stop")) + encoder.end()

    def fulfill(route: Route) -> None:
        route.fulfill(status=200, body=raw, headers={"Content-Type": "text/event-stream"})

    page.route("**/v1/chat/completions", fulfill)
    send(page, "long", dialect="openai-chat")
    finish(page)
    assert reply_text(page) == "".join(pieces)
    events = _raw_events(page)
    total = len(pieces) + 3  # the role chunk, the finish chunk, [DONE]
    assert len(events) == 200
    assert events[-1] == ("message", "[DONE]")
    assert '" w449"' in events[-3][1]
    assert page.locator("#raw-count").inner_text() == f"latest 200 of {total}"

    send(page, "emoji", dialect="anthropic")  # a new reply starts a new log
    finish(page)
    assert _raw_events(page)[0][0] == "message_start"
