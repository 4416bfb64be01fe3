"""The demo page's fault selector in headless Chromium against a real ``tokenstream serve``:
each fault kind injected by the server, and what the page shows of it, as a chat UI would.

Streamed with fetch in two dialects (OpenAI chat, Anthropic) and with EventSource (format
json). Waits are bounded waits for a state; the only times checked are generous lower bounds
of a stall the server was asked for.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tokenstream.engine.tokenizer import Tokenizer, load_encoding

from browser_support import finish, last_reply, reply_text, send
from support import scripted_reply

pytestmark = pytest.mark.browser

LONG_PROMPT = "Give me a long answer"
LONG = scripted_reply("long")
HELLO = scripted_reply("hello")
TOKENIZER = Tokenizer(load_encoding())
TOKENS = [piece.text for piece in TOKENIZER.pieces(LONG)]
HELLO_TOKENS = [piece.text for piece in TOKENIZER.pieces(HELLO)]

# (transport, dialect): fetch in two dialects' own events; EventSource in the json format
WAYS = [("fetch", "openai-chat"), ("fetch", "anthropic"), ("eventsource", "openai-chat")]
WAY_IDS = ["fetch-openai-chat", "fetch-anthropic", "eventsource-json"]
ENDING = {"fetch-openai-chat": "[DONE]", "fetch-anthropic": "message_stop",
          "eventsource-json": "[DONE]"}
# the events before the first token's: OpenAI's role chunk; Anthropic's message_start and
# content_block_start; none in the json format
EVENTS_BEFORE_TEXT = {"fetch-openai-chat": 1, "fetch-anthropic": 2, "eventsource-json": 0}
TEXT_EVENT = {"fetch-openai-chat": "message", "fetch-anthropic": "content_block_delta",
              "eventsource-json": "message"}

WAITING_SHOWN_JS = """() => {
  const note = document.querySelector("#messages > li:last-child .waiting:not([hidden])");
  return note !== null && note.textContent.startsWith("waiting…");
}"""


def _way_id(transport: str, dialect: str) -> str:
    return WAY_IDS[WAYS.index((transport, dialect))]


def _choose_fault(page: Page, *, preset: str | None = None, spec: str | None = None) -> None:
    if preset is not None:
        page.select_option("#fault-preset", preset)
    if spec is not None:
        page.fill("#fault-spec", spec)


def _send_long(page: Page, transport: str, dialect: str, profile: str = "instant") -> None:
    send(page, LONG_PROMPT, transport=transport, dialect=dialect, profile=profile)


def _error(page: Page) -> str:
    error: str = last_reply(page).locator(".error").inner_text()
    return error


def _parts(page: Page) -> list[str]:
    """The classes of the reply's parts, in order."""
    parts: list[str] = last_reply(page).evaluate("node => [...node.children].map(c => c.className)")
    return parts


def _stat_ms(page: Page, name: str) -> float:
    text = page.locator(f'#chat-stats [data-stat="{name}"]').inner_text()
    value, unit = text.split(" ")
    return float(value) * (1000 if unit == "s" else 1)


def test_a_preset_fills_the_spec_and_goes_with_each_request(page: Page) -> None:
    _choose_fault(page, preset="error:500@40")
    expect(page.locator("#fault-spec")).to_have_value("error:500@40")
    with page.expect_request("**/v1/chat/completions") as sent:
        _send_long(page, "fetch", "openai-chat")
    finish(page, "error")
    assert json.loads(sent.value.post_data or "")["tokenstream"]["fault"] == "error:500@40"
    assert '"fault": "error:500@40"' in page.inner_text("#request-preview")

    _choose_fault(page, spec="stall:1s@5,duplicate@2")  # by hand: no preset says it
    expect(page.locator("#fault-preset")).to_have_value("custom")
    with page.expect_request(lambda request: "/v1/stream?" in request.url) as sent:
        _send_long(page, "eventsource", "openai-chat")
    finish(page)
    assert parse_qs(urlsplit(sent.value.url).query)["fault"] == ["stall:1s@5,duplicate@2"]
    assert "fault=stall%3A1s%405%2Cduplicate%402" in page.inner_text("#request-preview")

    _choose_fault(page, spec="truncate@30")  # a preset's spec, typed
    expect(page.locator("#fault-preset")).to_have_value("truncate@30")
    _choose_fault(page, preset="")
    expect(page.locator("#fault-spec")).to_have_value("")
    with page.expect_request("**/v1/chat/completions") as sent:
        _send_long(page, "fetch", "openai-chat")
    finish(page)
    assert "fault" not in json.loads(sent.value.post_data or "")["tokenstream"]
    assert reply_text(page) == LONG


@pytest.mark.parametrize(("transport", "dialect"), WAYS, ids=WAY_IDS)
@pytest.mark.parametrize("status", [429, 529])
def test_an_http_error_before_the_stream_shows_its_status_and_message(
    page: Page, transport: str, dialect: str, status: int
) -> None:
    _choose_fault(page, preset=f"error:{status}@0")
    _send_long(page, transport, dialect)
    finish(page, "error")
    error = _error(page)
    assert error.startswith(f"HTTP {status}: Injected fault error:{status}@0")
    assert "(retry after 1 s)" in error
    assert reply_text(page) == ""


@pytest.mark.parametrize(("transport", "dialect"), WAYS, ids=WAY_IDS)
def test_an_error_event_is_shown_after_the_text_so_far(
    page: Page, transport: str, dialect: str
) -> None:
    _choose_fault(page, preset="error:500@40")
    _send_long(page, transport, dialect)
    finish(page, "error")
    assert reply_text(page) == "".join(TOKENS[:40])
    assert _error(page).startswith("Injected fault error:500@40")
    assert _parts(page) == ["text", "error", "meta"]


@pytest.mark.parametrize(("transport", "dialect"), WAYS, ids=WAY_IDS)
def test_a_truncated_stream_is_shown_as_incomplete(
    page: Page, transport: str, dialect: str
) -> None:
    _choose_fault(page, preset="truncate@30")
    _send_long(page, transport, dialect)
    finish(page, "error")
    assert reply_text(page) == "".join(TOKENS[:30])
    ending = ENDING[_way_id(transport, dialect)]
    how = "the connection closed before" if transport == "eventsource" else "no"
    assert _error(page) == f"The stream ended before the reply was complete: {how} {ending}."
    assert _parts(page) == ["text", "error", "meta"]


@pytest.mark.parametrize(("transport", "dialect"), WAYS, ids=WAY_IDS)
def test_a_connection_reset_is_shown(page: Page, transport: str, dialect: str) -> None:
    _choose_fault(page, spec="reset@20")
    _send_long(page, transport, dialect)
    finish(page, "error")
    shown = reply_text(page)
    assert LONG.startswith(shown) and len(shown) < len("".join(TOKENS[:21]))
    if transport == "fetch":  # the fetch body's read fails
        assert re.fullmatch(
            r"The connection broke off before the reply was complete \(.+\)\.", _error(page)
        )
    else:  # EventSource does not tell a reset from a close
        assert _error(page) == (
            "The stream ended before the reply was complete: the connection closed before [DONE]."
        )


@pytest.mark.parametrize(("transport", "dialect"), WAYS, ids=WAY_IDS)
def test_a_malformed_event_is_named_and_ends_the_reply(
    page: Page, transport: str, dialect: str
) -> None:
    _choose_fault(page, preset="malformed@12")
    _send_long(page, transport, dialect)
    finish(page, "error")
    way = _way_id(transport, dialect)
    number = EVENTS_BEFORE_TEXT[way] + 12  # the 12th token's event is the malformed one
    error = _error(page)
    assert error.startswith(f"Malformed event #{number} ({TEXT_EVENT[way]}): "), error
    assert "JSON" in error
    assert reply_text(page) == "".join(TOKENS[:11])


@pytest.mark.parametrize(("transport", "dialect"), WAYS, ids=WAY_IDS)
def test_a_duplicated_event_is_shown_as_received(
    page: Page, transport: str, dialect: str
) -> None:
    _choose_fault(page, preset="duplicate@7")
    _send_long(page, transport, dialect)
    finish(page)
    assert reply_text(page) == "".join(TOKENS[:7]) + TOKENS[6] + "".join(TOKENS[7:])
    expect(last_reply(page).locator(".error")).to_have_count(0)


@pytest.mark.parametrize(("transport", "dialect"), WAYS, ids=WAY_IDS)
def test_a_stall_shows_waiting_and_a_gap_then_the_whole_reply(
    page: Page, transport: str, dialect: str
) -> None:
    _choose_fault(page, spec="stall:2.5s@10")
    # paced: unpaced events due together go out in one write, past the stall's start
    send(page, "hello", transport=transport, dialect=dialect, profile="fast")
    page.wait_for_function(WAITING_SHOWN_JS, polling=50, timeout=20_000)
    shown = reply_text(page)  # the text before the stall, still there while it lasts
    assert HELLO.startswith(shown) and 0 < len(shown) <= len("".join(HELLO_TOKENS[:10]))
    finish(page)
    assert reply_text(page) == HELLO  # nothing lost
    expect(last_reply(page).locator(".waiting")).to_have_count(0)
    assert _stat_ms(page, "max-gap") >= 1000  # the stall is the gap plot's tallest bar


@pytest.mark.parametrize(("transport", "dialect"), WAYS, ids=WAY_IDS)
def test_slow_headers_show_waiting_before_the_reply(
    page: Page, transport: str, dialect: str
) -> None:
    _choose_fault(page, spec="slow_headers:2s")
    send(page, "hello", transport=transport, dialect=dialect, profile="instant")
    page.wait_for_function(WAITING_SHOWN_JS, polling=50, timeout=20_000)
    assert reply_text(page) == ""
    finish(page)
    assert reply_text(page) == HELLO
    assert _stat_ms(page, "ttft") >= 1000
