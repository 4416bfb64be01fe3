"""The scripted agent loop the tool-call tests share: a question answered with reasoning and
two tool calls, and the tool's result answered with text (Chinese, ZWJ emoji, leading
spaces and newlines in every part)."""

from __future__ import annotations

from tokenstream.engine.tokenizer import Tokenizer, load_encoding

REASONING = "The user wants the weather in 東京 🗼; I call the tool.\nThen I answer."
ARGUMENTS = {"city": "東京", "note": " leading space, 👩‍👩‍👧‍👦 and a\nnewline"}
ANSWER = " It is sunny in 東京 today ☀️."

RULES = {
    "responses": {
        "rules": [
            {"match": "weather", "tool_result": "sunny", "reply": ANSWER},
            {"match": "weather", "reasoning": REASONING,
             "tool_calls": [{"name": "get_weather", "arguments": ARGUMENTS},
                            {"name": "get_time", "arguments": '{"tz":"Asia/Tokyo"}',
                             "id": "call_time"}]},
        ]
    }
}


TOKENIZER = Tokenizer(load_encoding())


def count_tokens(text: str) -> int:
    return sum(piece.tokens for piece in TOKENIZER.pieces(text))


def paced_pieces(text: str) -> int:
    """Events a text is paced as: a token each, but the tokens of a character split across
    them make one piece (UTF-8 safe)."""
    return len(TOKENIZER.pieces(text))
