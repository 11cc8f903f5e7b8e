"""CTC greedy (best path) decoding: the most likely token per frame, repeats collapsed,
blanks dropped. Batched: one argmax over (B, T, V), one mask, then a split per utterance."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class CTCGreedyResult:
    """One utterance: token ids, the frame where each token's run of frames starts, and
    the log-probability of the best path (sum of the per-frame maxima)."""

    tokens: list[int]
    frames: list[int]
    path_log_prob: float


@torch.no_grad()
def ctc_greedy_search(log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0) -> list[CTCGreedyResult]:
    """Best-path decoding of a batch.

    log_probs: (B, T, V) CTC log-posteriors (any monotone scores work: logits give the same
    tokens); lengths: (B,) valid frames, None for all T. Returns B results.
    """
    B, T, _ = log_probs.shape
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.long)
    lengths = torch.as_tensor(lengths, device=log_probs.device)
    best, best_id = log_probs.max(dim=-1)  # (B, T)
    valid = torch.arange(T, device=log_probs.device)[None, :] < lengths[:, None]
    # A token is emitted where the best id changes and is not blank; frame 0 always "changes".
    changed = torch.ones_like(valid)
    changed[:, 1:] = best_id[:, 1:] != best_id[:, :-1]
    emit = changed & (best_id != blank) & valid
    path_log_prob = best.masked_fill(~valid, 0.0).sum(dim=1)

    results = []
    for b in range(B):
        frames = emit[b].nonzero().squeeze(1)
        results.append(
            CTCGreedyResult(
                tokens=best_id[b, frames].tolist(),
                frames=frames.tolist(),
                path_log_prob=float(path_log_prob[b]),
            )
        )
    return results


class CTCGreedySearch:
    """Best-path decoding of any model with a CTC head (`model.ctc`, `model.blank_id`)."""

    def __call__(self, model, enc) -> list[list[int]]:
        if getattr(model, "ctc", None) is None:
            raise ValueError(f"{type(model).__name__} has no CTC head to decode greedily")
        return [r.tokens for r in ctc_greedy_search(model.ctc.log_softmax(enc.output), enc.lengths,
                                                    blank=model.blank_id)]
