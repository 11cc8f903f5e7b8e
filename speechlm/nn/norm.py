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


class LlamaRMSNorm(nn.Module):
    """LLaMA's RMSNorm: the variance in float32 whatever the input dtype, the normalised
    activations cast back before the weight multiplies them (transformers' `LlamaRMSNorm`;
    in bf16 this differs from torch's fused rms_norm in the last bits)."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x (..., size) -> (..., size)."""
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)
