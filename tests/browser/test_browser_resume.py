"""A resumed stream in headless Chromium: an ``EventSource`` whose connection the server
resets mid-reply reconnects by itself (with ``Last-Event-ID``) and gets the rest: the page
shows the exact reply once, no text repeated and none missing."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from playwright.sync_api import Page, expect

from browser_support import STREAM_LIMIT_MS, Server, finish, last_reply, reply_text, send
from support import scripted_reply

RESUME_LINGER_S = 10
"""Longer than Chromium's ``EventSource`` waits to reconnect (about 3 s)."""

PROMPT = "prompt=tell%20me%20a%20story"
QUERY = PROMPT + "&tokens_per_second=40&ttft_ms=0"

# A minimal page's script: the reply's text as an EventSource delivers it, every event's id,
# and each connection error (the reconnects); closed at the sentinel, as a page does.
_READ = """url => new Promise(resolve => {
  const got = { text: "", ids: [], errors: 0 };
  const source = new EventSource(url);
  source.onmessage = event => {
    got.ids.push(event.lastEventId);
    if (event.data === "[DONE]") { source.close(); resolve(got); return; }
    got.text += event.data;
  };
  source.onerror = () => {
    got.errors += 1;
    if (source.readyState === EventSource.CLOSED) resolve(got);  // it gave up: no [DONE]
  };
})"""


def _uncut_text(server: Server) -> str:
    with urllib.request.urlopen(f"{server.url}/v1/stream?{PROMPT}&tokens_per_second=0",
                                timeout=30) as response:
        body = response.read().decode()
    datas = [line[len("data: "):] for line in body.split("\n") if line.startswith("data: ")]
    return "".join(datas[:-1])


def test_an_eventsource_cut_mid_reply_resumes_by_itself(page: Page, server: Server) -> None:
    page.set_default_timeout(STREAM_LIMIT_MS)
    got: dict[str, Any] = page.evaluate(_READ, f"/v1/stream?{QUERY}&fault=reset@0.5s")
    assert got["errors"] == 1, got  # one cut, one reconnect
    assert got["text"] == _uncut_text(server)
    stream_id = got["ids"][0].rsplit(":", 1)[0]
    assert got["ids"] == [f"{stream_id}:{n}" for n in range(1, len(got["ids"]) + 1)], (
        json.dumps(got["ids"])
    )


def test_the_demo_page_resumes_a_broken_eventsource_stream(page: Page) -> None:
    """The demo page leaves a broken EventSource to reconnect (and says so while it waits):
    the bubble ends done, with the whole reply once."""
    page.fill("#fault-spec", "reset@1s")
    send(page, "Give me a long answer", transport="eventsource", profile="steady")
    expect(last_reply(page)).to_have_attribute("data-reconnects", "1", timeout=STREAM_LIMIT_MS)
    finish(page, "done")
    assert reply_text(page) == scripted_reply("long")
    assert last_reply(page).locator(".error").count() == 0
