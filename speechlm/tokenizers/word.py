"""Word tokenizer: whitespace-separated words, the most frequent ones in the vocabulary,
everything else `<unk>` (the classic word-level ASR / LM setup)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from speechlm.tokenizers.base import SPECIAL_TOKENS, Tokenizer, with_special_tokens


class WordTokenizer(Tokenizer):
    """One token per whitespace-separated word.

    Args:
        tokens: the full token list (`<blank>`, `<unk>`, words..., `<sos/eos>`); usually made
            by `WordTokenizer.train`.
        special_tokens: role -> token, for a list not in ESPnet's layout (`Tokenizer`).
    """

    @classmethod
    def train(
        cls, lines: Iterable[str], min_count: int = 1, max_vocab: int | None = None
    ) -> WordTokenizer:
        """Words ordered by frequency, ties alphabetically (so the ids are reproducible).

        Args:
            min_count: drop words seen fewer times than this.
            max_vocab: keep at most this many words (not counting the 3 special tokens).
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_vocab is not None and max_vocab < 0:
            raise ValueError(f"max_vocab must be >= 0, got {max_vocab}")
        counts = Counter(word for line in lines for word in line.split())
        for special in SPECIAL_TOKENS:  # "<unk>" in a transcript already means unknown
            counts.pop(special, None)
        kept = (word for word, n in counts.items() if n >= min_count)
        words = sorted(kept, key=lambda word: (-counts[word], word))
        return cls(with_special_tokens(words[:max_vocab]))

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def encode(self, text: str) -> list[int]:
        return [self.token_to_id(word) for word in text.split()]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self._tokens[i] for i in self._content_ids(ids))

    def to_dict(self) -> dict[str, Any]:
        return {"_target_": self._target(), "tokens": self.tokens, **self._specials_dict()}
