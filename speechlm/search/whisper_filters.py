"""Whisper's logit filters, batched: each takes the rows' tokens so far (N, L) (the initial
tokens included; `sample_begin` of them) and next-token scores (N, V), and returns the
scores with forbidden tokens at -inf. Scores may be logits or log-probabilities: every rule
is invariant to a per-row shift (the timestamp rule compares log-softmaxes).

openai-whisper applies these row by row in Python (`decoding.py`: `SuppressBlank`,
`SuppressTokens`, `ApplyTimestampRules`); here they are tensor operations over all rows,
with the same outcome.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from speechlm.search.filters import SuppressAtStart, SuppressTokens

__all__ = ["SuppressAtStart", "SuppressTokens", "TimestampRules"]


class TimestampRules:
    """Whisper's `ApplyTimestampRules`. Timestamp tokens are ids [ts_begin, ts_end); text
    tokens are ids below `eot` (every vocabulary laid out as Whisper's: text, then the
    specials from <|endoftext|> on).

    - <|notimestamps|> never;
    - timestamps come in pairs (except right before <|endoftext|>): after a lone timestamp,
      no text; after a pair, no timestamp;
    - timestamps never decrease, and a segment is never empty (after a pair's start, a later
      timestamp only);
    - the first sampled token is a timestamp no later than `max_initial_timestamp_index`;
    - where the timestamps' total probability beats every text token's, a timestamp.
    """

    def __init__(self, sample_begin: int, eot: int, no_timestamps: int, ts_begin: int, ts_end: int,
                 max_initial_timestamp_index: int | None = None):
        self.sample_begin = sample_begin
        self.eot = eot
        self.no_timestamps = no_timestamps
        self.ts_begin = ts_begin
        self.ts_end = ts_end
        self.max_initial_timestamp_index = max_initial_timestamp_index

    def __call__(self, tokens: Tensor, scores: Tensor) -> Tensor:
        scores = scores.clone()
        scores[:, self.no_timestamps] = float("-inf")
        sampled = tokens[:, self.sample_begin:]
        n, length = sampled.shape
        vocab = torch.arange(scores.shape[1], device=scores.device)
        is_ts_vocab = (vocab >= self.ts_begin) & (vocab < self.ts_end)
        if length > 0:
            is_ts = (sampled >= self.ts_begin) & (sampled < self.ts_end)
            last = is_ts[:, -1]
            penultimate = is_ts[:, -2] if length >= 2 else torch.ones_like(last)
            # after a pair: no timestamp; after a lone timestamp: no text
            scores[(last & penultimate)[:, None] & is_ts_vocab[None]] = float("-inf")
            scores[(last & ~penultimate)[:, None] & (vocab < self.eot)[None]] = float("-inf")
            # no timestamp before the last one (or before last + 1, unless closing a pair)
            has_ts = is_ts.any(dim=1)
            last_ts = torch.where(is_ts, sampled, torch.full_like(sampled, -1)).max(dim=1).values
            bound = torch.where(last & ~penultimate, last_ts, last_ts + 1)  # (N,)
            below = is_ts_vocab[None] & (vocab[None] < bound[:, None]) & has_ts[:, None]
            scores[below] = float("-inf")
        else:
            scores[:, : self.ts_begin] = float("-inf")
            if self.max_initial_timestamp_index is not None:
                scores[:, self.ts_begin + self.max_initial_timestamp_index + 1:] = float("-inf")
        # where all timestamps together are likelier than any one text token: a timestamp
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        ts_logprob = logprobs[:, self.ts_begin:self.ts_end].logsumexp(dim=-1)
        text_max = logprobs[:, : self.ts_begin].max(dim=-1).values
        force = ts_logprob > text_max
        scores[force[:, None] & (vocab < self.ts_begin)[None]] = float("-inf")
        return scores


def whisper_suppress_ids(suppress_tokens: str | Sequence[int] | None, non_speech: Sequence[int],
                         control: Sequence[int]) -> list[int]:
    """Whisper's `_get_suppress_tokens`: "-1" (or -1 in a list) means its non-speech symbols;
    the control tokens (transcribe, translate, sot, sot_prev, sot_lm, no_speech) are always
    suppressed."""
    if isinstance(suppress_tokens, str):
        suppress_tokens = [int(t) for t in suppress_tokens.split(",") if t.strip()]
    ids = list(suppress_tokens or [])
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(non_speech)
    return sorted(set(ids) | set(control))
