from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenstream.sse.encoder import encode_comment, encode_event
from tokenstream.sse.parser import SSEDecoder

VECTORS = json.loads((Path(__file__).parent / "vectors" / "sse_encoding.json").read_text("utf-8"))


def _parse(raw: bytes) -> list[Any]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.close()


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["id"] for c in VECTORS["cases"]])
def test_vector_encodes_exactly(case: dict[str, Any]) -> None:
    assert encode_event(**case["fields"]) == case["expected"].encode("utf-8")


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["id"] for c in VECTORS["cases"]])
def test_vector_parses_back(case: dict[str, Any]) -> None:
    events = _parse(encode_event(**case["fields"]))
    expected = case.get("parses_as", case["fields"].get("data"))
    if expected is None:
        assert events == []
        return
    (event,) = events
    assert event.data == expected
    assert event.event == case["fields"].get("event", "message")
    assert event.id == case["fields"].get("id", "")


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb"])
def test_line_break_in_single_line_field_is_refused(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match=field):
        encode_event("x", **{field: bad})


def test_nul_in_id_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_event("x", id="a\0b")


def test_negative_retry_is_refused() -> None:
    with pytest.raises(ValueError, match="retry"):
        encode_event("x", retry=-1)


def test_event_needs_a_field() -> None:
    with pytest.raises(ValueError):
        encode_event()


def test_heartbeat_comment() -> None:
    assert encode_comment("ping") == b": ping\n\n"


@given(st.text())
def test_any_text_round_trips_with_line_breaks_normalised(text: str) -> None:
    """Whatever the text, the client gets it back, with CR and CRLF arriving as LF."""
    (event,) = _parse(encode_event(text))
    assert event.data == text.replace("\r\n", "\n").replace("\r", "\n")


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n")), st.data())
def test_round_trip_at_any_split_point(text: str, data: st.DataObject) -> None:
    raw = encode_event(text, event="e", id="1")
    cut = data.draw(st.integers(0, len(raw)))
    decoder = SSEDecoder()
    events = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) + decoder.close()
    assert [(e.data, e.event, e.id) for e in events] == [(text, "e", "1")]
