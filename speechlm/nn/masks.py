"""Padding and chunk masks. Convention: True marks a real (attendable) position."""
from __future__ import annotations

import torch
from torch import Tensor


def valid_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, T) bool, True on real frames."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(-1)


def chunk_mask(size: int, chunk_size: int, left_chunks: int = -1, device=None) -> Tensor:
    """(T, T) bool: frame i may attend to frame j when j's chunk is not after i's chunk
    and at most `left_chunks` chunks before it (-1: unlimited), as in WeNet/ESPnet
    streaming encoders."""
    idx = torch.arange(size, device=device)
    chunk = idx // chunk_size
    ok = chunk.unsqueeze(0) <= chunk.unsqueeze(1)
    if left_chunks >= 0:
        ok &= chunk.unsqueeze(0) >= (chunk.unsqueeze(1) - left_chunks)
    return ok
