"""Whisper's multi-head attention (Radford et al. 2022): separate query, key, value and
output projections, the key projection without bias (a key bias adds the same q . b to every
score of a query, which the softmax cancels), and softmax(q k^T / sqrt(d_head)) v. Whisper
scales q and k by d_head**-0.25 each; that is the same product, and here it is
`torch.nn.functional.scaled_dot_product_attention`'s default scale.

Parameter names follow speechlm's attention modules (OpenAI's in brackets):
linear_q (query), linear_k (key, no bias), linear_v (value), linear_out (out).

Self-attention projects q, k, v from one input; cross-attention projects k, v from the
encoder output once (`project_kv`) and queries from the decoder (`project_q`), so an
incremental decoder computes the memory side once per utterance.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class WhisperAttention(nn.Module):
    def __init__(self, n_feat: int, n_head: int):
        super().__init__()
        if n_feat % n_head:
            raise ValueError(f"n_feat {n_feat} is not divisible by n_head {n_head}")
        self.h, self.d_k = n_head, n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=False)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, H, T, d_k)"""
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.d_k).transpose(1, 2)

    def project_q(self, x: Tensor) -> Tensor:
        """(B, L, D) -> q (B, H, L, d_k)."""
        return self._heads(self.linear_q(x))

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, D) -> k, v each (B, H, T, d_k)."""
        return self._heads(self.linear_k(x)), self._heads(self.linear_v(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
               is_causal: bool = False) -> Tensor:
        """q (B, H, L, d_k), k and v (B, H, T, d_k), mask None or bool broadcastable to
        (B, H, L, T), True where query i may attend key j; `is_causal` (L = T, no mask):
        query i attends keys j <= i -> (B, L, D)."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        b, _, length, _ = out.shape
        return self.linear_out(out.transpose(1, 2).reshape(b, length, self.h * self.d_k))

    def forward(self, x: Tensor, source: Tensor | None = None, mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        """x (B, L, D) queries; source (B, T, D) keys and values (None: x, self-attention);
        mask and is_causal as in `attend` -> (B, L, D)."""
        k, v = self.project_kv(x if source is None else source)
        return self.attend(self.project_q(x), k, v, mask, is_causal)


def key_padding_mask(lengths: Tensor, size: int) -> Tensor | None:
    """(B,) lengths -> (B, 1, 1, T) bool, True on real frames, to broadcast over heads and
    queries; None when no row is padded (every length >= T), so that full-length input
    runs the unmasked attention, exactly as Whisper's."""
    if bool((lengths >= size).all()):
        return None
    return (torch.arange(size, device=lengths.device) < lengths.unsqueeze(-1))[:, None, None, :]
