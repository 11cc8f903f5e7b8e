"""Multi-head source (encoder-decoder) attention: decoder queries, encoder-output keys.

Numerically ESPnet's `MultiHeadedAttention` used as a decoder's `src_attn`. Parameter
names are ESPnet's except that the key and value projections are one fused `kv` Linear
(the memory is projected once, in one matmul):

    kv.weight = cat([linear_k.weight, linear_v.weight], dim=0)  # (2D, D); bias likewise

`project_memory` is separate from `forward` so that an incremental decoder can project
the encoder output once per utterance and reuse it at every step.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speechlm.nn.dropout import Dropout


class CrossAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int, dropout_rate: float = 0.0):
        super().__init__()
        if n_feat % n_head:
            raise ValueError(f"n_feat {n_feat} is not divisible by n_head {n_head}")
        self.h, self.d_k = n_head, n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.kv = nn.Linear(n_feat, 2 * n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.dropout = Dropout(dropout_rate)

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """memory (B, T, D) -> k, v each (B, H, T, d_k)."""
        b, t, _ = memory.shape
        k, v = self.kv(memory).view(b, t, 2, self.h, self.d_k).permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(self, x: Tensor, memory: Tensor | None, mask: Tensor | None,
                memory_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, L, D) queries, memory (B, T, D), mask (B, 1, T) True on real frames
        -> (B, L, D). With `memory_kv` (from `project_memory`) `memory` is not read."""
        b, l, _ = x.shape
        k, v = self.project_memory(memory) if memory_kv is None else memory_kv
        q = self.linear_q(x).view(b, l, self.h, self.d_k).transpose(1, 2)  # (B, H, L, d_k)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_k)  # (B, H, L, T)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        # Every utterance has at least one real frame, so padded frames get exactly 0 weight
        # after the softmax (ESPnet's second masked_fill changes nothing).
        out = self.dropout(torch.softmax(scores, dim=-1)) @ v  # (B, H, L, d_k)
        return self.linear_out(out.transpose(1, 2).reshape(b, l, self.h * self.d_k))
