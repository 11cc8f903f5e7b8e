"""Grouped-query causal self-attention (Ainslie et al. 2023) as LLaMA / Qwen2 have it: q from
`num_heads` heads, k/v from `num_kv_heads` (each k/v head serves num_heads / num_kv_heads
query heads), RoPE on q and k, a KV cache the caller carries. Parameter names are Hugging
Face's (`q_proj`, `k_proj`, `v_proj`, `o_proj`). Qwen2 has biases on q/k/v but not on o;
LLaMA's `attention_bias` puts them on all four."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechlm.nn.rotary import apply_rotary


def causal_padding_mask(query_real: Tensor, cached_real: Tensor) -> Tensor:
    """(B, 1, L, C + L) bool, True = may attend: query i (absolute position C + i) sees real keys
    up to itself. Each query also sees its own key, so a padding query (left padding) has one
    key and never a 0/0 softmax whose NaN would reach real rows through the values.

    query_real (B, L) bool: the new tokens that are real; cached_real (B, C) bool: the cache's."""
    c, length = cached_real.shape[1], query_real.shape[1]
    keys_real = torch.cat([cached_real, query_real], dim=1)  # (B, C + L)
    key_pos = torch.arange(c + length, device=query_real.device)
    query_pos = torch.arange(length, device=query_real.device) + c
    causal = key_pos[None, :] <= query_pos[:, None]  # (L, C + L)
    itself = key_pos[None, :] == query_pos[:, None]
    return ((causal[None] & keys_real[:, None, :]) | itself[None]).unsqueeze(1)


class GroupedQueryAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int | None = None,
                 qkv_bias: bool = False, output_bias: bool = False, dropout: float = 0.0):
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=output_bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor,
                past_keys: Tensor | None = None, past_values: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, L, D); cos/sin (B, L, head_dim) for the new positions; mask (B, 1, L, C + L) from
        `causal_padding_mask`; past keys/values (B, H_kv, C, head_dim) (rotated) or None ->
        (output (B, L, D), keys and values (B, H_kv, C + L, head_dim) including the new tokens)."""
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past_keys is not None:
            k, v = torch.cat([past_keys, k], dim=2), torch.cat([past_values, v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.num_heads != self.num_kv_heads,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(b, length, -1)), k, v
