"""Whisper's audio encoder (Radford et al. 2022), numerically openai-whisper's `AudioEncoder`:

    log-mel (B, T, n_mels) -> Conv1d k3 p1 -> GELU -> Conv1d k3 s2 p1 -> GELU   (T' = ceil(T / 2))
      -> + sinusoidal positions [0, T') -> pre-LN blocks x + MHSA(LN(x)), x + MLP(LN(x))
      -> LN                                                  (MLP: d -> 4d -> GELU -> d)

Whisper always reads 30-s windows (3000 frames -> 1500 positions). Here shorter input
works too (training on short utterances): the position table is sliced to T', and when some
row of a batch is shorter than the batch, its padded frames are zeroed before each
convolution and masked as attention keys, so each row's output equals that row encoded
alone. A batch of full rows (every length = T: the 30-s windows) runs without a mask,
exactly as Whisper does.

Parameter names (OpenAI's -> ours; `speechlm.interop.whisper` converts):
conv1/conv2 -> embed.conv1/conv2, blocks.N -> encoders.N (attn -> self_attn, attn_ln -> norm1,
mlp.0/mlp.2 -> feed_forward.w_1/w_2, mlp_ln -> norm2), ln_post -> after_norm;
`positional_embedding` is a buffer of the state_dict in both (a checkpoint's own table is
used, e.g. an fp16-rounded one, as Whisper itself does).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechlm.encoders.base import Encoder, EncoderOutput, StemOutput
from speechlm.nn.dropout import Dropout
from speechlm.nn.feed_forward import FeedForward
from speechlm.nn.masks import valid_mask
from speechlm.nn.whisper_attention import WhisperAttention, key_padding_mask


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """(length, channels) float32: sin of every position over `channels // 2` timescales
    (geometric from 1 to `max_timescale`) in the first half, cos in the second, computed
    as openai-whisper's `sinusoids` does (float32), so tables are bit-identical."""
    if channels % 2:
        raise ValueError(f"channels {channels} must be even")
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class WhisperConvStem(nn.Module):
    """Two 1-D convolutions with GELU; the second halves the frame rate (10 ms -> 20 ms)."""

    def __init__(self, input_size: int, d_model: int):
        super().__init__()
        self.conv1 = nn.Conv1d(input_size, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)

    def forward(self, xs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """xs (B, T, F), lengths (B,) -> (B, ceil(T/2), D), ceil(lengths/2). Frames past a
        row's length are zeroed before each convolution (only if some row is padded), as
        the convolution's own zero padding would be for that row alone."""
        x = xs.transpose(1, 2)  # (B, F, T)
        keep = None
        if bool((lengths < x.shape[2]).any()):
            keep = valid_mask(lengths, x.shape[2]).unsqueeze(1).to(x.dtype)  # (B, 1, T)
            x = x * keep
        x = F.gelu(self.conv1(x))
        if keep is not None:
            x = x * keep
        x = F.gelu(self.conv2(x))
        return x.transpose(1, 2), torch.div(lengths + 1, 2, rounding_mode="floor")


class WhisperEncoderBlock(nn.Module):
    """x + MHSA(norm1(x)), then x + MLP(norm2(x)); LayerNorm eps 1e-5 (torch's, Whisper's)."""

    def __init__(self, size: int, attention_heads: int, dropout_rate: float = 0.0):
        super().__init__()
        self.self_attn = WhisperAttention(size, attention_heads)
        self.norm1 = nn.LayerNorm(size)
        self.feed_forward = FeedForward(size, 4 * size, 0.0, nn.GELU())
        self.norm2 = nn.LayerNorm(size)
        self.dropout = Dropout(dropout_rate)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, T, D), mask (B, 1, 1, T) True on real frames or None -> (B, T, D)."""
        x = x + self.dropout(self.self_attn(self.norm1(x), mask=mask))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class WhisperEncoder(Encoder):
    """Whisper's encoder; tiny: d_model 384, 6 heads, 4 blocks; large: 1280, 20, 32.
    `max_positions` (OpenAI's n_audio_ctx): the longest input is 2 x max_positions frames.
    `dropout_rate` (not in Whisper, for fine-tuning) drops after the positions and on each
    residual branch."""

    def __init__(self, input_size: int, d_model: int = 384, attention_heads: int = 6, num_blocks: int = 4,
                 max_positions: int = 1500, dropout_rate: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.d_model = d_model
        self.attention_heads = attention_heads
        self.max_positions = max_positions
        self._output_size = d_model
        self.embed = WhisperConvStem(input_size, d_model)
        self.register_buffer("positional_embedding", whisper_sinusoids(max_positions, d_model))
        self.dropout = Dropout(dropout_rate)
        self.encoders = nn.ModuleList(WhisperEncoderBlock(d_model, attention_heads, dropout_rate)
                                      for _ in range(num_blocks))
        self.after_norm = nn.LayerNorm(d_model)

    def stem(self, xs: Tensor, lengths: Tensor) -> StemOutput:
        """xs (B, T, n_mels), lengths (B,) -> StemOutput(x (B, T', D) with positions added,
        lengths (B,), None); T' = ceil(T / 2) <= max_positions."""
        x, lengths = self.embed(xs, lengths)
        if x.shape[1] > self.max_positions:
            raise ValueError(f"{xs.shape[1]} input frames give {x.shape[1]} positions; this encoder has "
                             f"{self.max_positions} (at most {2 * self.max_positions} frames, 30 s for Whisper)")
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        return StemOutput(self.dropout(x), lengths, None)

    def blocks(self, stem: StemOutput, return_layers: Sequence[int] = (),
               condition: Callable[[Tensor], Tensor] | None = None) -> EncoderOutput:
        """The blocks and `after_norm` over a stem's output -> EncoderOutput; `return_layers`
        (1-based) and `condition` as `speechlm.encoders.base.Encoder.blocks` (intermediate
        outputs get the final norm)."""
        x, lengths, _ = stem
        mask = key_padding_mask(lengths, x.shape[1])
        intermediate = {}
        for i, block in enumerate(self.encoders, start=1):
            x = block(x, mask)
            if i in return_layers:
                intermediate[i] = self.after_norm(x)
                if condition is not None:
                    x = x + condition(intermediate[i])
        return EncoderOutput(self.after_norm(x), lengths, intermediate)
