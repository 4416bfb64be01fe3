"""A tool call's arguments as a JSON object, also when the token limit cut them short.

A dialect whose whole reply carries the arguments parsed (Anthropic's ``tool_use.input``)
shows of cut arguments what a streaming client shows: the members complete so far, as the
official SDKs' partial-JSON parsing gives them (``{"city": "Paris", "unit": "cel`` ->
``{"city": "Paris"}``; containers opened are kept, empty or with their complete members).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["object_of"]

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_CLOSERS = {"{": "}", "[": "]"}
_AFTER_VALUE = frozenset(" \t\r\n,]}")


def object_of(arguments: str) -> dict[str, Any]:
    """The JSON object ``arguments`` are, or the complete part of it; ``{}`` if they are no
    object at all."""
    try:
        value = json.loads(arguments)
    except ValueError:
        value = _complete_part(arguments)
    except RecursionError:
        value = None
    return value if isinstance(value, dict) else {}


def _complete_part(text: str) -> Any:
    """The value of ``text`` cut after its last complete value, open containers closed."""
    open_containers: list[str] = []  # their closing brackets, innermost last
    expect_key = False  # inside an object, before a member's ':'
    cut_at = 0  # where the longest prefix that ends with a complete value ends
    cut_closers = ""  # the brackets that close it
    end = len(text)
    pos = 0
    while pos < end:
        char = text[pos]
        if char in " \t\r\n":
            pos += 1
            continue
        complete = True
        if char in _CLOSERS:
            open_containers.append(_CLOSERS[char])
            expect_key = char == "{"
            pos += 1
        elif char in "]}":
            if not open_containers or open_containers.pop() != char:
                break
            pos += 1
        elif char == ",":
            expect_key = bool(open_containers) and open_containers[-1] == "}"
            complete = False
            pos += 1
        elif char == ":":
            expect_key = False
            complete = False
            pos += 1
        elif char == '"':
            string = _STRING.match(text, pos)
            if string is None:
                break
            complete = not expect_key
            pos = string.end()
        elif char in _LITERALS:
            literal = _LITERALS[char]
            if not text.startswith(literal, pos):
                break
            pos += len(literal)
        else:
            number = _NUMBER.match(text, pos)
            # a number is complete at the end of the text or before what may follow a value
            if number is None or (number.end() < end and text[number.end()] not in _AFTER_VALUE):
                break
            pos = number.end()
        if complete:
            cut_at, cut_closers = pos, "".join(reversed(open_containers))
        if not open_containers and complete:
            break
    try:
        return json.loads(text[:cut_at] + cut_closers) if cut_at else None
    except (ValueError, RecursionError):
        return None
