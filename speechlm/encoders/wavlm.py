"""WavLM (Chen et al. 2022): wav2vec 2.0's context network (`Wav2Vec2Encoder`) whose
self-attention adds a gated relative position bias, numerically Hugging Face's `WavLMModel`:

    scores = q k^T / sqrt(d_k) + gate(x) * bias[bucket(j - i)]          (per head)

The bias table (num_buckets x heads) buckets the offset j - i as T5 does, bidirectionally:
half the buckets per direction, exact up to num_buckets / 4 and logarithmic up to
max_distance. It is computed once per forward (HF: in layer 0, then passed on) and every
block gates it with its own query-dependent gate, `gru_rel_pos`:
a, b = sigmoid(sum of 4 of Linear(d_k, 8)(x_head)), gate = a * (b * const - 1) + 2.

Parameter names: HF's encoder.layers.0.attention.rel_attn_embed -> encoder.rel_pos.embed;
encoder.layers.N.attention.gru_rel_pos_{linear,const} -> encoder.encoders.N.self_attn.
gru_rel_pos_{linear,const}; the rest as `speechlm.encoders.wav2vec2`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speechlm.encoders.wav2vec2 import Wav2Vec2Encoder
from speechlm.nn.attention import MultiHeadAttention


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None) -> Tensor:
    """(T, T) long: the bucket of key j's offset j - i from query i (HF's arithmetic)."""
    pos = torch.arange(length, device=device)
    offset = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = offset.abs()
    log_scaled = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    far = (exact + log_scaled).long().clamp(max=half - 1)
    return (offset > 0).long() * half + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """Learned bias per head and offset bucket -> (H, T, T)."""

    def __init__(self, heads: int, num_buckets: int = 320, max_distance: int = 800):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embed = nn.Embedding(num_buckets, heads)

    def forward(self, length: int) -> Tensor:
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance, self.embed.weight.device)
        return self.embed(buckets).permute(2, 0, 1)


class GatedRelPositionAttention(MultiHeadAttention):
    """Self-attention with WavLM's gated relative position bias (module docstring)."""

    def __init__(self, n_head: int, n_feat: int, dropout_rate: float = 0.0):
        super().__init__(n_head, n_feat, dropout_rate)
        self.gru_rel_pos_linear = nn.Linear(self.d_k, 8)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, n_head, 1, 1))

    def forward(self, x: Tensor, pos_emb: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, T, D), pos_emb: the bias (H, T, T), mask (B, 1, T) -> (B, T, D)."""
        b, t, _ = x.shape
        q, k, v = self.project(x)
        heads = x.view(b, t, self.h, self.d_k).transpose(1, 2)  # (B, H, T, d_k): the input, not q
        gate_a, gate_b = torch.sigmoid(self.gru_rel_pos_linear(heads).view(b, self.h, t, 2, 4).sum(-1)).chunk(2, -1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H, T, 1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_k) + gate * pos_emb
        return self.attend(scores, v, mask)


class WavLMEncoder(Wav2Vec2Encoder):
    """`Wav2Vec2Encoder` with gated relative position bias attention; BASE by default
    (LARGE: 1024, 16 heads, 4096, 24 blocks, layer_norm_first=True)."""

    attention_class = GatedRelPositionAttention

    def __init__(self, input_size: int = 512, output_size: int = 768, attention_heads: int = 12,
                 linear_units: int = 3072, num_blocks: int = 12, dropout_rate: float = 0.1,
                 attention_dropout_rate: float = 0.1, activation_dropout_rate: float = 0.0,
                 input_dropout_rate: float = 0.1, layer_norm_first: bool = False, conv_pos: int = 128,
                 conv_pos_groups: int = 16, layer_drop_rate: float = 0.05, num_buckets: int = 320,
                 max_distance: int = 800):
        super().__init__(input_size, output_size, attention_heads, linear_units, num_blocks, dropout_rate,
                         attention_dropout_rate, activation_dropout_rate, input_dropout_rate, layer_norm_first,
                         conv_pos, conv_pos_groups, layer_drop_rate)
        self.rel_pos = RelativePositionBias(attention_heads, num_buckets, max_distance)
        nn.init.normal_(self.rel_pos.embed.weight, mean=0.0, std=0.02)

    def position_bias(self, x: Tensor) -> Tensor:
        return self.rel_pos(x.shape[1]).to(x.dtype)
