"""Multi-head self-attention, plain and with Transformer-XL relative positions, computed by
`torch.nn.functional.scaled_dot_product_attention` (SDPA).

Numerically ESPnet's `MultiHeadedAttention`, `RelPositionMultiHeadedAttention`
(rel_pos_type "latest") and `LegacyRelPositionMultiHeadedAttention` (rel_pos_type
"legacy"), with ESPnet's parameter names except that the three input projections are one
fused `qkv` Linear (one matmul instead of three). The "latest" relative shift is a
strided view, not ESPnet's pad-and-reshape copy.

The relative-position term reaches SDPA as an additive float bias (attn_mask), with the
padding mask folded in as -inf, so on a GPU the memory-efficient kernel runs it (the flash
kernel takes no bias); plain attention passes a boolean mask. On a CPU, SDPA's fused flash
kernel runs when it can (no dropout, no gradient for the bias: inference, plain attention
without dropout); where SDPA would fall back to its unfused "math" kernel (training with
attention dropout, or a relative-position bias that needs a gradient) the same ops run here
instead, with speechlm's cheaper dropout mask and without the math kernel's extra passes for
all-masked rows (`_safe_softmax`): in the Conformer bench that kernel's `bernoulli_` alone
took 5x the time of our mask.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechlm.nn.dropout import Dropout, dropout
from speechlm.nn.positional import RotaryEmbedding


def rel_shift(bd: Tensor) -> Tensor:
    """(B, H, T, 2T-1) scores against relative positions T-1 .. -(T-1) ->
    (B, H, T, T) with out[..., i, j] = bd[..., i, T-1-i+j] (position i - j)."""
    b, h, t, n = bd.shape
    bd = bd.contiguous()
    # Row i starts at offset (T-1-i) within its row: a step of n-1 = 2T-2 per row.
    return bd.as_strided((b, h, t, t), (h * t * n, t * n, n - 1, 1), bd.storage_offset() + t - 1)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None = None,
              dropout_p: float = 0.0) -> Tensor:
    """softmax((q k^T + bias) / sqrt(d), masked) v, through SDPA where it has a fused kernel.

    q (B, H, T, d), k and v (B, H, S, d); mask (B, 1, S) or (B, T, S), True on keys a query
    may attend to, or None; bias broadcastable to (B, H, T, S), unscaled (ESPnet divides the
    sum of both terms by sqrt(d)) -> (B, H, T, d).

    A query row with no key to attend to gives zeros, as ESPnet's (its softmax weights are
    zeroed after the softmax): that row is opened to every key, so no kernel sees an all
    -inf row (NaN in some), and its output is multiplied by 0.
    """
    row_ok = None
    if mask is not None:
        mask = mask.unsqueeze(1)  # (B, 1, 1 or T, S)
        row_ok = mask.any(-1, keepdim=True)  # (B, 1, 1 or T, 1)
        # On a CPU the check is free; on a GPU it would wait for the device, so there the
        # rows are always multiplied (a (B, H, T, d) pass).
        if mask.device.type == "cpu" and bool(row_ok.all()):
            row_ok = None
        else:
            mask = mask | ~row_ok
    if q.device.type == "cpu" and (dropout_p > 0 or (bias is not None and bias.requires_grad)):
        out = _unfused_attention(q, k, v, mask, bias, dropout_p)
    else:
        attn_mask = None if bias is None else bias / math.sqrt(q.shape[-1])
        if mask is not None:
            attn_mask = mask if attn_mask is None else attn_mask.masked_fill(~mask, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    return out if row_ok is None else out * row_ok


def _unfused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None,
                       dropout_p: float) -> Tensor:
    """What SDPA's math kernel computes, for rows with at least one key to attend to, in
    ESPnet's order of operations (so CPU training matches it, and speechlm before SDPA, to
    the bit). The in-place steps are safe for autograd: none of matmul, add, div keeps its
    output."""
    scores = q @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores.add_(bias)
    scores = scores.div_(math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores.masked_fill_(~mask, float("-inf"))
    return dropout(torch.softmax(scores, dim=-1), dropout_p) @ v


class MultiHeadAttention(nn.Module):
    """Self-attention; `rope=True` rotates q and k (no positional table needed)."""

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float = 0.0, rope: bool = False):
        super().__init__()
        if n_feat % n_head:
            raise ValueError(f"n_feat {n_feat} is not divisible by n_head {n_head}")
        self.h, self.d_k = n_head, n_feat // n_head
        self.qkv = nn.Linear(n_feat, 3 * n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.dropout = Dropout(dropout_rate)
        self.rope = RotaryEmbedding(self.d_k) if rope else None

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, D) -> q, k, v each (B, H, T, d_k)."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, self.d_k).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def merge_heads(self, x: Tensor) -> Tensor:
        """(B, H, T, d_k) -> linear_out of (B, T, H * d_k)."""
        b, _, t, _ = x.shape
        return self.linear_out(x.transpose(1, 2).reshape(b, t, self.h * self.d_k))

    @property
    def dropout_p(self) -> float:
        return self.dropout.p if self.training else 0.0

    def attend(self, scores: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Explicit softmax for callers that build the scores themselves (WavLM's gated
        bias, the decoder's cached step): scores (B, H, T, S) already scaled; mask (B, 1, S)
        or (B, T, S), True on real keys."""
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        # Every query row has at least one real key, so masked keys get exactly 0 weight
        # after the softmax: ESPnet's second masked_fill is not needed.
        return self.merge_heads(self.dropout(torch.softmax(scores, dim=-1)) @ v)

    def forward(self, x: Tensor, pos_emb: Tensor | None, mask: Tensor | None) -> Tensor:
        """x (B, T, D), mask (B, 1, T) or (B, T, T) -> (B, T, D). pos_emb is unused (uniform call)."""
        q, k, v = self.project(x)
        if self.rope is not None:
            q, k = self.rope(q, k)
        return self.merge_heads(attention(q, k, v, mask, dropout_p=self.dropout_p))


def legacy_rel_shift(bd: Tensor) -> Tensor:
    """ESPnet's "legacy" shift of (B, H, T, T) scores against positions (Transformer-XL's
    original pad-and-reshape): on and below the diagonal out[..., i, j] = bd[..., i, T-1-i+j],
    just above it 0, and further right values that wrap in from row i + 1."""
    b, h, t, n = bd.shape
    padded = torch.cat([bd.new_zeros(b, h, t, 1), bd], dim=-1).view(b, h, n + 1, t)
    return padded[:, :, 1:].reshape(b, h, t, n)


class RelPositionMultiHeadAttention(MultiHeadAttention):
    """Transformer-XL attention (Dai et al. 2019, as in ESPnet's "latest" rel_pos):
    scores = ((q + u) k^T + shift((q + v) p^T)) / sqrt(d_k). `zero_triu` zeroes the
    position term above the diagonal (query i, key j > i), as ESPnet's option does."""

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float = 0.0, zero_triu: bool = False):
        super().__init__(n_head, n_feat, dropout_rate)
        self.zero_triu = zero_triu
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(self.h, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: Tensor, pos_emb: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, T, D), pos_emb (1, 2T-1, D), mask (B, 1, T) -> (B, T, D)."""
        q, k, v = self.project(x)
        p = self.linear_pos(pos_emb).view(-1, self.h, self.d_k).transpose(0, 1)  # (H, 2T-1, d_k)
        bd = self.shift((q + self.pos_bias_v.unsqueeze(1)) @ p.transpose(-2, -1))  # (B, H, T, T)
        if self.zero_triu:
            t = bd.shape[-2]
            bd = bd * torch.ones(t, t, dtype=bd.dtype, device=bd.device).tril()
        # the content term (q + u) k^T is SDPA's own product, the position term its bias
        out = attention(q + self.pos_bias_u.unsqueeze(1), k, v, mask, bd, self.dropout_p)
        return self.merge_heads(out)

    @staticmethod
    def shift(bd: Tensor) -> Tensor:
        return rel_shift(bd)


class LegacyRelPositionMultiHeadAttention(RelPositionMultiHeadAttention):
    """ESPnet's `legacy_rel_selfattn`: as above, with pos_emb (1, T, D) from
    `LegacyRelPositionalEncoding` and the legacy shift."""

    @staticmethod
    def shift(bd: Tensor) -> Tensor:
        return legacy_rel_shift(bd)
