"""Logit filters for `joint_beam_search` (openai-whisper's `LogitFilter`s): each takes the
rows' tokens so far (N, L) (forced prefix included) and their next-token scores (N, V), and
returns the scores with forbidden tokens at -inf (in place: a search hands them fresh scores)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class SuppressTokens:
    """Never emit these tokens (Whisper's `suppress_tokens`, e.g. its non-speech symbols)."""

    def __init__(self, token_ids: Sequence[int]):
        self.token_ids = sorted({int(t) for t in token_ids})
        self._index = torch.tensor(self.token_ids, dtype=torch.long)

    def __call__(self, tokens: Tensor, scores: Tensor) -> Tensor:
        if self._index.device != scores.device:
            self._index = self._index.to(scores.device)
        return scores.index_fill_(-1, self._index, float("-inf"))


class SuppressAtStart:
    """Not as the first token after a prefix of `prefix_length` tokens (Whisper's
    `SuppressBlank`: no blank or end of text right away)."""

    def __init__(self, token_ids: Sequence[int], prefix_length: int = 1):
        self.token_ids = sorted({int(t) for t in token_ids})
        self.prefix_length = prefix_length
        self._index = torch.tensor(self.token_ids, dtype=torch.long)

    def __call__(self, tokens: Tensor, scores: Tensor) -> Tensor:
        if tokens.shape[1] != self.prefix_length:
            return scores
        if self._index.device != scores.device:
            self._index = self._index.to(scores.device)
        return scores.index_fill_(-1, self._index, float("-inf"))
