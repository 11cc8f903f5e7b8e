"""Label-smoothed cross-entropy, as ESPnet's `LabelSmoothingLoss`: the KL divergence from
the model's distribution to a smoothed target that puts 1 - s on the true token and
s / (V - 1) on each other token, summed over real positions and divided by the batch size
(or, with normalize_length, by the number of real tokens).

ESPnet builds the (B*L, V) target distribution and an elementwise KL of the same size;
here the KL is written in closed form, which needs no (B*L, V) temporaries beyond the
log-softmax:

    KL = sum_c t_c log t_c  -  (1 - s - e) log p_y  -  e sum_c log p_c,    e = s / (V - 1)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _xlogx(x: float) -> float:
    return x * math.log(x) if x > 0 else 0.0


class LabelSmoothingLoss(nn.Module):
    """ESPnet's argument names: `size` is the vocabulary size, `padding_idx` the id of
    positions to ignore (-1 in ESPnet's ASR models)."""

    def __init__(self, size: int, padding_idx: int = -1, smoothing: float = 0.1,
                 normalize_length: bool = False):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.size = size
        self.padding_idx = padding_idx
        self.smoothing = smoothing
        self.confidence = 1.0 - smoothing
        self.normalize_length = normalize_length

    def forward(self, x: Tensor, target: Tensor) -> Tensor:
        """x (B, L, V) logits, target (B, L) ids with padding_idx on ignored positions
        -> scalar loss."""
        if x.shape[-1] != self.size:
            raise ValueError(f"logits have {x.shape[-1]} classes, the loss expects {self.size}")
        eps = self.smoothing / (self.size - 1)
        logp = torch.log_softmax(x, dim=-1)  # (B, L, V)
        real = target != self.padding_idx
        logp_y = logp.gather(-1, target.masked_fill(~real, 0).unsqueeze(-1)).squeeze(-1)  # (B, L)
        entropy = _xlogx(self.confidence) + (self.size - 1) * _xlogx(eps)  # sum_c t_c log t_c
        kl = entropy - (self.confidence - eps) * logp_y - eps * logp.sum(-1)  # (B, L)
        denom = real.sum() if self.normalize_length else x.shape[0]
        return kl.masked_fill(~real, 0.0).sum() / denom
