"""Normalisation layers.

`LayerNorm` is ESPnet's: torch's with eps=1e-12 (not 1e-5), which matters for parity
with ESPnet checkpoints. `RMSNorm` for models that want it."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def LayerNorm(size: int) -> nn.LayerNorm:  # noqa: N802 -- reads as the module it builds
    return nn.LayerNorm(size, eps=1e-12)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, over the last dimension (Zhang & Sennrich 2019)."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
