from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenstream.engine.tokenizer import (
    CL100K_BASE_SHA256,
    Piece,
    Tokenizer,
    _read_ranks,
    load_encoding,
)
from tokenstream.errors import TokenizerError

SAMPLES = {
    "english": "Hello, world! Streaming replies token by token feels alive.",
    "code": 'def f(x):\n    return {"a": [x, x ** 2]}  # comment\n\n\tprint(f(3))\r\n',
    "chinese": "我懒得写你谷搜到处皆只因你太美",
    "japanese": "東京は日本の首都です。ひらがなとカタカナ。",
    "emoji_zwj": "Family 👨‍👩‍👧‍👦, flag 🏳️‍🌈, skin 👋🏽, keycap 1️⃣, 🇯🇵🇫🇷",
    "mixed_lines": " leading space\n\n\ntrailing spaces   \r\nend\r",
    "special_token_text": "say <|endoftext|> and <|fim_prefix|> literally",
}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_encoding("cl100k_base"))


def test_loads_offline_as_cl100k_base(tokenizer: Tokenizer) -> None:
    assert tokenizer.name == "cl100k_base"
    assert tokenizer.encoding.encode_ordinary("hello world") == [15339, 1917]


@pytest.mark.parametrize("name", SAMPLES)
def test_pieces_reassemble_exactly(tokenizer: Tokenizer, name: str) -> None:
    text = SAMPLES[name]
    pieces = tokenizer.pieces(text)
    assert "".join(p.text for p in pieces) == text
    assert all("\ufffd" not in p.text for p in pieces)
    assert all(p.text for p in pieces)
    assert sum(p.tokens for p in pieces) == len(tokenizer.encoding.encode_ordinary(text))


def test_tokens_ending_inside_a_character_are_held(tokenizer: Tokenizer) -> None:
    pieces = tokenizer.pieces("懒")  # three tokens, the first two end inside the character
    assert pieces == [Piece("懒", 3)]


def test_leading_spaces_stay_on_tokens(tokenizer: Tokenizer) -> None:
    assert [p.text for p in tokenizer.pieces("hello world")] == ["hello", " world"]


@pytest.mark.parametrize("name", SAMPLES)
async def test_incremental_matches_whole_at_every_split(tokenizer: Tokenizer, name: str) -> None:
    text = SAMPLES[name]
    whole = tokenizer.pieces(text)
    for cut in range(len(text) + 1):
        incremental = tokenizer.incremental()
        pieces = incremental.feed(text[:cut]) + incremental.feed(text[cut:]) + incremental.flush()
        assert pieces == whole, f"split at {cut}"


async def test_incremental_one_character_at_a_time(tokenizer: Tokenizer) -> None:
    text = "".join(SAMPLES.values())
    incremental = tokenizer.incremental()
    pieces: list[Piece] = []
    for char in text:
        pieces += incremental.feed(char)
    pieces += incremental.flush()
    assert pieces == tokenizer.pieces(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), max_size=6))
def test_incremental_matches_whole_for_any_deltas(deltas: list[str]) -> None:
    tokenizer = Tokenizer(load_encoding("cl100k_base"))
    incremental = tokenizer.incremental()
    pieces: list[Piece] = []
    for delta in deltas:
        pieces += incremental.feed(delta)
    pieces += incremental.flush()
    assert pieces == tokenizer.pieces("".join(deltas))


def test_hash_mismatch_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "cl100k_base.tiktoken"
    fake.write_bytes(b"aGVsbG8= 0\n")
    with pytest.raises(TokenizerError, match="SHA-256"):
        _read_ranks(fake, CL100K_BASE_SHA256)


def test_ranks_parse_when_hash_matches(tmp_path: Path) -> None:
    data = b"aGVsbG8= 0\nd29ybGQ= 1\n"
    path = tmp_path / "tiny.tiktoken"
    path.write_bytes(data)
    assert _read_ranks(path, hashlib.sha256(data).hexdigest()) == {b"hello": 0, b"world": 1}


def test_unknown_encoding_error_names_the_fix() -> None:
    with pytest.raises(TokenizerError, match="cl100k_base"):
        load_encoding("no_such_encoding")
