"""Whole-text tokenization of non-live sources, and the pieces cache."""

from __future__ import annotations

import pytest

from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding

TEXTS = [
    "Hello, world! This is tokenstream.\n\nSecond paragraph   with  spaces ",
    "我懒得写你谷搜到处皆只因你太美",
    "Family: 👨\u200d👩\u200d👧\u200d👦, flags 🇯🇵🇫🇷, skin 👋🏽.",
    "def f(x):\n\treturn x ** 2  # code\r\n",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding("cl100k_base"))


@pytest.mark.parametrize("text", TEXTS)
def test_whole_text_gives_the_incremental_boundaries(tokenizer: Tokenizer, text: str) -> None:
    incremental = tokenizer.incremental()
    live: list[Piece] = []
    for start in range(0, len(text), 3):
        live += incremental.feed(text[start : start + 3])
    live += incremental.flush()
    whole = list(tokenizer.shared_pieces(text))
    assert whole == live
    assert "".join(p.text for p in whole) == text
    assert "\ufffd" not in "".join(p.text for p in whole)


def test_cached_pieces_are_equal_and_independent(tokenizer: Tokenizer) -> None:
    first = tokenizer.pieces(TEXTS[1])
    first.clear()  # a caller changing its list must not change the cache
    assert tokenizer.pieces(TEXTS[1]) == tokenizer._split(TEXTS[1])
    assert tokenizer.pieces(TEXTS[1])


def test_the_cache_is_bounded() -> None:
    tokenizer = Tokenizer(load_encoding("cl100k_base"))
    for index in range(200):
        tokenizer.pieces(f"reply number {index}")
    assert 0 < len(tokenizer._cache) <= 64
    assert "reply number 199" in tokenizer._cache
