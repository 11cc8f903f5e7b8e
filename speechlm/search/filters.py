"""Logit filters for `joint_beam_search` (openai-whisper's `LogitFilter`s): each takes the
rows' tokens so far (N, L) (forced prefix included) and their next-token scores (N, V), and
returns the scores with forbidden tokens at -inf."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class SuppressTokens:
    """Never emit these tokens (Whisper's `suppress_tokens`, e.g. its non-speech symbols)."""

    def __init__(self, token_ids: Sequence[int]):
        self.token_ids = sorted({int(t) for t in token_ids})

    def __call__(self, tokens: Tensor, scores: Tensor) -> Tensor:
        index = torch.tensor(self.token_ids, dtype=torch.long, device=scores.device)
        return scores.index_fill(-1, index, float("-inf"))


class SuppressAtStart:
    """Not as the first token after a prefix of `prefix_length` tokens (Whisper's
    `SuppressBlank`: no blank or end of text right away)."""

    def __init__(self, token_ids: Sequence[int], prefix_length: int = 1):
        self.token_ids = sorted({int(t) for t in token_ids})
        self.prefix_length = prefix_length

    def __call__(self, tokens: Tensor, scores: Tensor) -> Tensor:
        if tokens.shape[1] != self.prefix_length:
            return scores
        index = torch.tensor(self.token_ids, dtype=torch.long, device=scores.device)
        return scores.index_fill(-1, index, float("-inf"))
