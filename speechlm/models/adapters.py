"""Speech -> LM adapters: shorten a speech encoder's output and project it to the LM's width,
so it can be spliced into the prompt's embeddings (`speechlm.models.speech_llm`).

Each is `forward(x (B, T, D_enc), lengths (B,)) -> (y (B, T', D_lm), lengths' (B,))` and
`output_lengths(lengths) -> lengths'`; built by Hydra with `input_size` (the encoder's width)
and `output_size` (the LM's). Frames past an utterance's length never reach its output: an
utterance gives the same vectors alone as batched with longer ones (tests check it).

- FrameStackMLP: k consecutive frames concatenated, then an MLP (SALMONN's / LLaVA's projector).
- ConvAdapter: a stack of strided Conv1d (each halves the rate at stride 2), then a projection.
- QFormerAdapter: learned queries that cross-attend to the frames (BLIP-2's Q-Former); one set
  per utterance, or per window of W frames (SALMONN's window-level Q-Former: the output grows
  with the audio).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechlm.nn.masks import valid_mask

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r}: expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """x (B, T, D) with the frames at and past each length set to 0."""
    return x.masked_fill(~valid_mask(lengths, x.shape[1]).unsqueeze(-1), 0.0)


class FrameStackMLP(nn.Module):
    """Concatenate `stack` consecutive frames (the tail padded with zeros), then
    Linear(stack * D_enc, hidden) -> activation -> Linear(hidden, D_lm).

    (B, T, D_enc) -> (B, ceil(T / stack), D_lm); lengths' = ceil(lengths / stack)."""

    def __init__(self, input_size: int, output_size: int, stack: int = 4, hidden_size: int | None = None,
                 activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        if stack < 1:
            raise ValueError(f"FrameStackMLP: stack must be >= 1, got {stack}")
        self.stack = stack
        hidden_size = hidden_size or output_size
        self.mlp = nn.Sequential(nn.Linear(stack * input_size, hidden_size), _activation(activation),
                                 nn.Dropout(dropout), nn.Linear(hidden_size, output_size))

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths + self.stack - 1, self.stack, rounding_mode="floor")

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        batch, frames, dim = x.shape
        x = _zero_padding(x, lengths)  # a short utterance's last group holds zeros, not a neighbour's frames
        x = F.pad(x, (0, 0, 0, (-frames) % self.stack))
        x = x.reshape(batch, -1, self.stack * dim)
        return self.mlp(x), self.output_lengths(lengths)


class ConvAdapter(nn.Module):
    """`num_layers` Conv1d(kernel_size, stride, padding kernel_size // 2) with an activation
    after each, then Linear(hidden, D_lm). Each layer's input is zeroed past the lengths, so
    padding frames read as the convolution's own zero padding.

    (B, T, D_enc) -> (B, T', D_lm), per layer T' = floor((T + 2 (k // 2) - k) / stride) + 1."""

    def __init__(self, input_size: int, output_size: int, num_layers: int = 2, kernel_size: int = 3, stride: int = 2,
                 hidden_size: int | None = None, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        hidden_size = hidden_size or output_size
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2
        self.convs = nn.ModuleList(
            nn.Conv1d(input_size if i == 0 else hidden_size, hidden_size, kernel_size, stride, self.padding)
            for i in range(num_layers))
        self.activation = _activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden_size, output_size)

    def _layer_lengths(self, lengths: Tensor) -> Tensor:
        out = torch.div(lengths + 2 * self.padding - self.kernel_size, self.stride, rounding_mode="floor") + 1
        return out.clamp(min=0)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for _ in self.convs:
            lengths = self._layer_lengths(lengths)
        return lengths

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        for conv in self.convs:
            x = _zero_padding(x, lengths)
            x = self.activation(conv(x.transpose(1, 2))).transpose(1, 2)
            lengths = self._layer_lengths(lengths)
        return self.proj(self.dropout(x)), lengths


class QFormerBlock(nn.Module):
    """Pre-norm: queries self-attend, cross-attend to the frames (padding masked), FFN.
    q (N, Q, H), memory (N, W, H), memory_mask (N, W) bool True=real -> (N, Q, H)."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_size: int, dropout: float):
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden_size)
        self.self_attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, ffn_size), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_size, hidden_size))
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        h = self.self_norm(q)
        q = q + self.dropout(self.self_attn(h, h, h, need_weights=False)[0])
        h = self.cross_norm(q)
        q = q + self.dropout(self.cross_attn(h, memory, memory, key_padding_mask=~memory_mask,
                                             need_weights=False)[0])
        return q + self.dropout(self.ffn(self.ffn_norm(q)))


class QFormerAdapter(nn.Module):
    """`num_queries` learned queries cross-attend to the encoder output through `num_layers`
    QFormerBlocks, then LayerNorm + Linear(hidden, D_lm).

    window None: one set of queries per utterance: (B, T, D_enc) -> (B, Q, D_lm), lengths' = Q.
    window W: one set per window of W frames (the last one partial): (B, ceil(T/W) * Q, D_lm),
    lengths' = ceil(lengths / W) * Q. (An empty utterance gives no outputs.) The frames carry
    no position here: the encoder's output already does."""

    def __init__(self, input_size: int, output_size: int, num_queries: int = 8, hidden_size: int = 256,
                 num_heads: int = 4, num_layers: int = 2, ffn_size: int | None = None, window: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        if window is not None and window < 1:
            raise ValueError(f"QFormerAdapter: window must be >= 1 or null, got {window}")
        self.num_queries, self.window = num_queries, window
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_size) * 0.02)
        self.memory_proj = nn.Sequential(nn.Linear(input_size, hidden_size), nn.LayerNorm(hidden_size))
        self.blocks = nn.ModuleList(QFormerBlock(hidden_size, num_heads, ffn_size or 4 * hidden_size, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.proj = nn.Linear(hidden_size, output_size)

    def _windows(self, lengths: Tensor) -> Tensor:
        if self.window is None:
            return (lengths > 0).long()
        return torch.div(lengths + self.window - 1, self.window, rounding_mode="floor")

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self._windows(lengths) * self.num_queries

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        batch, frames, _ = x.shape
        width = frames if self.window is None else self.window
        memory = self.memory_proj(x)
        memory = F.pad(memory, (0, 0, 0, (-frames) % width))
        mask = valid_mask(lengths, memory.shape[1])
        n_windows = memory.shape[1] // width
        memory = memory.reshape(batch * n_windows, width, -1)
        mask = mask.reshape(batch * n_windows, width)
        # only windows holding a real frame are computed (an all-padding key set has no softmax)
        used = mask.any(dim=1)
        q = self.queries.expand(int(used.sum()), -1, -1)
        for block in self.blocks:
            q = block(q, memory[used], mask[used])
        y = self.proj(self.norm(q))
        out = y.new_zeros(batch * n_windows, self.num_queries, y.shape[-1])
        out[used] = y
        return out.reshape(batch, n_windows * self.num_queries, -1), self.output_lengths(lengths)
