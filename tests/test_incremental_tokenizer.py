"""IncrementalTokenizer: token boundaries equal the whole text's, however the text is split."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenstream.engine.tokenizer import Tokenizer, load_encoding

# Fragments that stress cl100k's pre-tokenizer: whitespace runs before digits and letters,
# contractions split from their apostrophe, CR/LF pairs, digits in threes, CJK, emoji with
# modifiers and joiners, combining marks, other Unicode spaces.
FRAGMENTS = [
    "a", "Zq", " ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "'", "'s", "'LL", "'re",
    "1", "23", "4567", ".", "!", ",", "-", "((", ")", "$", "**", "_", "你", "好", "。", "👋",
    "🏽", "\u200d", "e\u0301", "<|endoftext|>", "\x0b", "\u2028",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding())


def _incremental(tokenizer: Tokenizer, parts: list[str]) -> list[str]:
    incremental = tokenizer.incremental()
    pieces = []
    for part in parts:
        pieces += incremental.feed(part)
    return [p.text for p in pieces + incremental.flush()]


@pytest.mark.parametrize("text", ["a\t 1+b", "_  23好", "!\u00a0 ,\n\n 1x", "x\t 1 1b"])
def test_whitespace_before_a_digit_keeps_its_boundaries(tokenizer: Tokenizer, text: str) -> None:
    """Released text is tokenized in context: alone, ``"\\t "`` would be one match."""
    whole = [p.text for p in tokenizer.pieces(text)]
    assert _incremental(tokenizer, [text]) == whole
    for cut in range(len(text) + 1):
        assert _incremental(tokenizer, [text[:cut], text[cut:]]) == whole


def test_random_fragment_texts_split_anywhere(tokenizer: Tokenizer) -> None:
    rng = random.Random(3)
    for _ in range(3000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12)))
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 5))))
        parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert _incremental(tokenizer, parts) == [p.text for p in tokenizer.pieces(text)], parts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), min_size=1, max_size=10))
def test_any_deltas(deltas: list[str]) -> None:
    tokenizer = Tokenizer(load_encoding())
    text = "".join(deltas)
    assert _incremental(tokenizer, deltas) == [p.text for p in tokenizer.pieces(text)]


def test_only_the_last_match_is_held(tokenizer: Tokenizer) -> None:
    incremental = tokenizer.incremental()
    assert incremental.feed("Hello") == []
    assert [p.text for p in incremental.feed(" world")] == ["Hello"]
    assert incremental.pending_text == " world"
    assert [p.text for p in incremental.flush()] == [" world"]


def test_boundary_the_regex_engines_disagree_on_is_held() -> None:
    """U+3D000 is a letter to Python's `regex` but not to tiktoken's engine (Unicode tables
    of different versions): the split after it is not tiktoken's, so nothing is released
    there. Found by hypothesis."""
    tokenizer = Tokenizer(load_encoding("cl100k_base"))
    deltas = ["\U0003d000", "'s"]
    assert _incremental(tokenizer, deltas) == [p.text for p in tokenizer.pieces("".join(deltas))]
