"""Character tokenizer with ESPnet's conventions: a space is the token `<space>`, and
non-linguistic symbols such as `[noise]` or `<laugh>` stay whole instead of being spelled
out letter by letter."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from speechlm.tokenizers.base import (
    SPECIAL_TOKENS,
    Tokenizer,
    normalize_whitespace,
    with_special_tokens,
)

SPACE = "<space>"


class CharTokenizer(Tokenizer):
    """One token per character, `<space>` for " ", non-linguistic symbols kept whole.

    Args:
        tokens: the full token list (`<blank>`, `<unk>`, ..., `<sos/eos>`); usually made by
            `CharTokenizer.train`.
        non_linguistic_symbols: strings matched before single characters, longest first.
        special_tokens: role -> token, for a list not in ESPnet's layout (`Tokenizer`).
    """

    def __init__(self, tokens: Sequence[str], non_linguistic_symbols: Sequence[str] = (),
                 special_tokens: dict[str, str] | None = None):
        super().__init__(tokens, special_tokens)
        self._non_linguistic_symbols = [str(s) for s in non_linguistic_symbols]
        self._pattern = _piece_pattern(self._non_linguistic_symbols)

    @classmethod
    def train(
        cls, lines: Iterable[str], non_linguistic_symbols: Sequence[str] = ()
    ) -> CharTokenizer:
        """Vocabulary = every piece seen in `lines` + all the symbols + `<space>`.

        Sorted by code point, so the same text always gives the same ids regardless of line
        order. Symbols and `<space>` are in even if unseen: they are declared, not learned.
        """
        symbols = [str(s) for s in non_linguistic_symbols]
        pattern = _piece_pattern(symbols)
        pieces = {SPACE, *symbols}
        for line in lines:
            pieces.update(_split(normalize_whitespace(line), pattern))
        return cls(with_special_tokens(sorted(pieces)), symbols)

    def tokenize(self, text: str) -> list[str]:
        return _split(normalize_whitespace(text), self._pattern)

    def encode(self, text: str) -> list[int]:
        return [self.token_to_id(piece) for piece in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        # Faithful to the ids (as ESPnet): leading/doubled <space> stay as spaces.
        pieces = [self._tokens[i] for i in self._content_ids(ids)]
        return "".join(" " if p == SPACE else p for p in pieces)

    @property
    def non_linguistic_symbols(self) -> list[str]:
        return list(self._non_linguistic_symbols)

    def to_dict(self) -> dict[str, Any]:
        return {
            "_target_": self._target(),
            "tokens": self.tokens,
            "non_linguistic_symbols": self.non_linguistic_symbols,
            **self._specials_dict(),
        }


def _piece_pattern(symbols: Sequence[str]) -> re.Pattern[str]:
    """A regex matching one symbol (longest first, so `<laugh>` beats `<la`) or one char."""
    for s in symbols:
        if s in SPECIAL_TOKENS or s == SPACE:
            raise ValueError(f"{s!r} is reserved and cannot be a non-linguistic symbol")
        if s == "" or any(c.isspace() for c in s):
            raise ValueError(f"non-linguistic symbols must be non-empty, no whitespace: {s!r}")
    longest_first = sorted(set(symbols), key=lambda s: (-len(s), s))
    return re.compile("|".join([*map(re.escape, longest_first), "."]), re.DOTALL)


def _split(normalized_text: str, pattern: re.Pattern[str]) -> list[str]:
    return [SPACE if p == " " else p for p in pattern.findall(normalized_text)]
