"""Cut tool-call arguments as an object: what the official SDKs show of them streamed.

The judge is jiter's partial mode, which the ``anthropic`` SDK uses to build a ``tool_use``
block's ``input`` from its ``input_json_delta`` fragments."""

from __future__ import annotations

import pytest
from jiter import from_json

from tokenstream.dialects.partial_json import object_of

ARGUMENTS = [
    '{"city": "Par\\u00e9is", "n": -12.5e3, "ok": true, "nested": {"a": [1, 2, {"b": null}],'
    ' "c": "x"}, "last": [] }',
    '{"q":"东京 你好，世界！👩‍👩‍👧‍👦","esc":"a\\"b\\\\c\\n","arr":[[],[{}],[1.5,-0,false]],"z":0}',
    '{ "location" : "San Francisco, CA" , "unit" : "celsius" }',
]


def _sdk_view(arguments: str) -> object:
    try:
        return from_json(arguments.encode(), partial_mode=True)
    except ValueError:
        return {}


@pytest.mark.parametrize("arguments", ARGUMENTS)
def test_every_cut_gives_what_the_sdk_shows_streamed(arguments: str) -> None:
    for end in range(len(arguments) + 1):
        cut = arguments[:end]
        assert object_of(cut) == _sdk_view(cut), cut


def test_some_cuts_explicitly() -> None:
    assert object_of('{"city": "Paris", "unit": "cel') == {"city": "Paris"}
    assert object_of('{"city": "Paris", "days": [1, 2') == {"city": "Paris", "days": [1, 2]}
    assert object_of('{"city": "Paris", "n": 12.') == {"city": "Paris"}
    assert object_of('{"a": {"b": tru') == {"a": {}}


@pytest.mark.parametrize("arguments", ["", "[1, 2]", '"text"', "12", "nonsense", "{1: 2}"])
def test_anything_but_an_object_is_an_empty_input(arguments: str) -> None:
    assert object_of(arguments) == {}


def test_nesting_too_deep_for_the_parser_is_an_empty_input() -> None:
    assert object_of('{"a":' * 100_000) == {}
