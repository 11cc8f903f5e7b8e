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
        """In place (as whisper's filters): the rules need one slice per row, and slices
        allocate nothing where (N, V) masks would."""
        inf = float("-inf")
        scores[:, self.no_timestamps] = inf
        sampled = tokens[:, self.sample_begin:]
        n, length = sampled.shape
        if length == 0:
            scores[:, : self.ts_begin] = inf
            if self.max_initial_timestamp_index is not None:
                scores[:, self.ts_begin + self.max_initial_timestamp_index + 1:] = inf
        else:
            is_ts = (sampled >= self.ts_begin) & (sampled < self.ts_end)
            last = is_ts[:, -1].tolist()
            penultimate = is_ts[:, -2].tolist() if length >= 2 else [True] * n
            last_ts = torch.where(is_ts, sampled, torch.full_like(sampled, -1)).max(dim=1).values.tolist()
            for k in range(n):
                if last[k]:  # after a pair: no timestamp; after a lone timestamp: no text
                    if penultimate[k]:
                        scores[k, self.ts_begin:self.ts_end] = inf
                    else:
                        scores[k, : self.eot] = inf
                if last_ts[k] >= 0:  # no timestamp before the last (before last + 1 unless closing a pair)
                    bound = last_ts[k] if last[k] and not penultimate[k] else last_ts[k] + 1
                    scores[k, self.ts_begin:bound] = inf
        # where all timestamps together are likelier than any one text token: a timestamp
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        force = logprobs[:, self.ts_begin:self.ts_end].logsumexp(dim=-1) > logprobs[:, : self.ts_begin].max(dim=-1).values
        for k in torch.nonzero(force).flatten().tolist():
            scores[k, : self.ts_begin] = inf
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
