"""The incremental SSE parser against event stream vectors modelled on WPT eventsource/format-*.

Each vector is fed whole, one byte at a time, and split in two at every byte: the parser
must dispatch the same events however the bytes arrive (a CRLF, a BOM or a UTF-8 character
split across reads included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokenstream.sse.parser import EventTooLong, ServerSentEvent, SSEDecoder

VECTORS = json.loads((Path(__file__).parent / "vectors" / "sse_format.json").read_text("utf-8"))
CASES = VECTORS["cases"]


def _raw(case: dict[str, Any]) -> bytes:
    if "input_hex" in case:
        return bytes.fromhex(case["input_hex"])
    return str(case["input"]).encode("utf-8")


def _expected(case: dict[str, Any]) -> list[ServerSentEvent]:
    return [
        ServerSentEvent(
            data=event["data"],
            event=event.get("event", "message"),
            id=event.get("id", ""),
            retry=event.get("retry"),
        )
        for event in case["events"]
    ]


def _parse(parts: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for part in parts:
        events += decoder.feed(part)
    return events + decoder.close()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_vector_whole(case: dict[str, Any]) -> None:
    assert _parse([_raw(case)]) == _expected(case)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_vector_one_byte_at_a_time(case: dict[str, Any]) -> None:
    raw = _raw(case)
    assert _parse([raw[i : i + 1] for i in range(len(raw))]) == _expected(case)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_vector_split_at_every_byte(case: dict[str, Any]) -> None:
    raw = _raw(case)
    expected = _expected(case)
    for cut in range(len(raw) + 1):
        assert _parse([raw[:cut], raw[cut:]]) == expected, f"split at byte {cut}"


def test_vectors_cover_the_wpt_format_cases() -> None:
    modelled = {c["modelled_on"].removeprefix("eventsource/") for c in CASES if "modelled_on" in c}
    assert modelled >= {
        "format-bom",
        "format-bom-2",
        "format-comments",
        "format-data-before-final-empty-line",
        "format-field-data",
        "format-field-event",
        "format-field-event-empty",
        "format-field-id",
        "format-field-id-3",
        "format-field-id-null",
        "format-field-parsing",
        "format-field-retry",
        "format-field-retry-bogus",
        "format-field-retry-empty",
        "format-field-unknown",
        "format-leading-space",
        "format-newlines",
        "format-null-character",
        "format-utf-8",
    }


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("a")]
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\r") == [ServerSentEvent("b")]  # CR CR: no need to wait for an LF


def test_a_long_line_is_collected_in_parts_up_to_its_limit() -> None:
    decoder = SSEDecoder(max_event_chars=10)
    assert decoder.feed(b"data: ab") == []
    assert decoder.feed(b"cd\n\n")[0].data == "abcd"  # 10 characters with "data: "
    decoder.feed(b"data: abc")
    with pytest.raises(EventTooLong):
        decoder.feed(b"defgh")


def test_an_event_of_many_data_lines_is_bounded_too() -> None:
    decoder = SSEDecoder(max_event_chars=10)
    assert decoder.feed(b"data: abcd\ndata: efgh\n\n")[0].data == "abcd\nefgh"
    decoder.feed(b"data: abcd\ndata: efgh\n")
    with pytest.raises(EventTooLong):
        decoder.feed(b"data: ij\n")
