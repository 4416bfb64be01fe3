"""The demo page in headless Chromium against a real ``tokenstream serve``.

Waits are bounded waits for the page or the server to reach a state (Playwright's
auto-waiting); nothing asserts how long anything took.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from browser_support import STREAM_LIMIT_MS, Server, finish, last_reply, reply_text, send
from support import scripted_reply

pytestmark = pytest.mark.browser

HELLO = scripted_reply("hello")
CHINESE = scripted_reply("chinese")
EMOJI = scripted_reply("emoji")
LONG = scripted_reply("long")

TRANSPORTS = ["fetch", "eventsource"]

# wait_for_function does not await a promise: each poll starts a request and answers from
# the previous one.
SERVER_IDLE_JS = """() => {
  fetch("/healthz").then((r) => r.json())
    .then((health) => { window.testActiveStreams = health.active_streams; });
  return window.testActiveStreams === 0;
}"""


def _stats(page: Page, root: str) -> dict[str, str]:
    stats: dict[str, str] = page.locator(root).evaluate(
        """root => Object.fromEntries([...root.querySelectorAll("[data-stat]")]
               .map(node => [node.dataset.stat, node.textContent]))"""
    )
    return stats


def _assert_measured(page: Page, root: str, plot: str) -> None:
    stats = _stats(page, root)
    assert stats["ttft"].endswith("ms") or stats["ttft"].endswith(" s"), stats
    assert float(stats["rate"].lstrip("≈")) > 0, stats
    events = int(stats["events"])
    assert events > 1, "the reply arrived in one piece, not token by token"
    assert int(stats["tokens"].lstrip("≈")) >= events
    assert page.locator(f"{plot} .bars rect").count() == events - 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "prompt,reply",
    [("hello", HELLO), ("Say something in Chinese", CHINESE), ("emoji", EMOJI)],
    ids=["hello", "chinese", "emoji"],
)
def test_reply_streams_into_the_page_exactly(
    page: Page, transport: str, prompt: str, reply: str
) -> None:
    send(page, prompt, transport=transport)
    finish(page)
    text = reply_text(page)
    assert "\ufffd" not in text
    assert text == reply
    _assert_measured(page, "#chat-stats", "#chat-plot")
    assert last_reply(page).get_attribute("data-transport") == transport


@pytest.mark.parametrize("fmt", ["json", "text", "openai"])
def test_eventsource_named_events(page: Page, fmt: str) -> None:
    """``event=custom`` and ``addEventListener('custom', ...)``, in each wire format."""
    page.check("#transport-eventsource")
    page.select_option("#es-format", fmt)
    page.fill("#es-event", "custom")
    with page.expect_request(lambda request: "/v1/stream?" in request.url) as sent:
        send(page, "emoji", transport="eventsource")
    query = parse_qs(urlsplit(sent.value.url).query)
    assert query["event"] == ["custom"]
    assert query["format"] == [fmt]
    finish(page)
    assert reply_text(page) == EMOJI
    assert 'addEventListener("custom"' in page.inner_text("#request-preview")


def test_conversation_history_goes_with_fetch(page: Page) -> None:
    send(page, "hello")
    finish(page)
    with page.expect_request("**/v1/chat/completions") as sent:
        send(page, "emoji")
    finish(page)
    body = json.loads(sent.value.post_data or "")
    assert body["stream"] is True
    assert body["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": HELLO},
        {"role": "user", "content": "emoji"},
    ]
    assert reply_text(page) == EMOJI


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stop_closes_the_stream_and_the_server_stops(
    page: Page, server: Server, transport: str
) -> None:
    before = server.health()
    page.fill("#ttft", "0")
    send(page, "Give me a long answer", transport=transport, profile="slow")
    expect(last_reply(page)).to_have_attribute("data-state", "streaming")
    # stats are measured while the reply streams, not only at the end
    expect(page.locator('#chat-stats [data-stat="events"]')).not_to_have_text("–")
    assert server.health()["active_streams"] == 1

    page.click("#stop")
    finish(page, "stopped")
    page.wait_for_function(SERVER_IDLE_JS, polling=100, timeout=10_000)
    after = server.health()
    assert after["active_streams"] == 0
    assert after["client_disconnects"] == before["client_disconnects"] + 1
    assert after["streams_completed"] == before["streams_completed"]
    shown = reply_text(page)
    assert 0 < len(shown) < len(LONG)
    assert LONG.startswith(shown)
    expect(page.locator("#active-streams")).to_have_text("0")
    expect(page.locator("#stop")).to_be_disabled()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_overrides_reach_the_server(page: Page, transport: str) -> None:
    page.fill("#tps", "400")
    page.fill("#ttft", "0")
    page.fill("#jitter", "0")
    with page.expect_request(lambda r: "/v1/stream?" in r.url or "/chat/completions" in r.url) as s:
        send(page, "hello", transport=transport, profile="slow")
    finish(page)
    assert reply_text(page) == HELLO
    expected = {"profile": "slow", "tokens_per_second": 400, "ttft_ms": 0, "jitter": 0}
    if transport == "fetch":
        assert json.loads(s.value.post_data or "")["tokenstream"] == expected
    else:
        query = parse_qs(urlsplit(s.value.url).query)
        assert {key: query[key][0] for key in expected} == {k: str(v) for k, v in expected.items()}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_errors_are_shown(page: Page, transport: str) -> None:
    page.fill("#tps", "-1")
    send(page, "hello", transport=transport)
    finish(page, "error")
    message = last_reply(page).locator(".error").inner_text()
    assert "tokens_per_second" in message
    assert "greater than 0" in message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_compare_runs_two_profiles_side_by_side(page: Page, transport: str) -> None:
    page.check(f"#transport-{transport}")
    page.click("#tab-compare")
    expect(page.locator("#view-compare")).to_be_visible()
    expect(page.locator("#view-chat")).to_be_hidden()
    page.fill("#compare-prompt", "hello")
    page.select_option("#compare-a", "fast")
    page.select_option("#compare-b", "steady")
    page.click("#compare-run")
    for side, profile in (("a", "fast"), ("b", "steady")):
        card = f"#result-{side}"
        expect(page.locator(card)).to_have_attribute("data-state", "done", timeout=STREAM_LIMIT_MS)
        assert page.locator(f"{card} .profile-name").inner_text() == profile
        assert page.locator(f"{card} .text").evaluate("node => node.textContent") == HELLO
        _assert_measured(page, card, f"{card} .plot")
    # both streams on one timeline
    assert page.locator("#compare-timeline path.series").count() == 2


def test_screenshots(page: Page, screenshot_dir: Path) -> None:
    """Pictures of the page for review (and for the README, with TOKENSTREAM_SCREENSHOT_DIR)."""
    send(page, "hello", profile="chatgpt")
    finish(page)
    send(page, "Show me some code", profile="chatgpt")
    finish(page)
    page.mouse.move(0, 0)
    chat = screenshot_dir / "screenshot.png"
    page.screenshot(path=str(chat))

    page.click("#tab-compare")
    page.fill("#compare-prompt", "Give me a long answer")
    page.select_option("#compare-a", "chatgpt")
    page.select_option("#compare-b", "bursty")
    page.click("#compare-run")
    for card in ("#result-a", "#result-b"):
        expect(page.locator(card)).to_have_attribute("data-state", "done", timeout=STREAM_LIMIT_MS)
    compare = screenshot_dir / "screenshot-compare.png"
    page.screenshot(path=str(compare))
    for path in (chat, compare):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
