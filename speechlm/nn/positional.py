"""Positional encodings, numerically ESPnet's.

Both scale the input by sqrt(d) first (ESPnet does, and trained models expect it). The
sinusoid tables are computed on demand and cached, never saved in checkpoints.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speechlm.nn.dropout import Dropout


def sinusoids(positions: Tensor, d_model: int) -> Tensor:
    """(N,) float positions -> (N, d_model): sin on even, cos on odd channels."""
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    angles = positions.float().unsqueeze(1) * div
    pe = torch.zeros(len(positions), d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe


class _Cached(nn.Module):
    def __init__(self, d_model: int, dropout_rate: float):
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)
        self.dropout = Dropout(dropout_rate)
        self._table: Tensor | None = None

    def _get(self, needed: int, like: Tensor) -> Tensor:
        if self._table is None or self._table.shape[0] < needed:
            self._table = self.table(max(needed, 1024))
        if self._table.dtype != like.dtype or self._table.device != like.device:
            self._table = self._table.to(like)
        return self._table


class PositionalEncoding(_Cached):
    """Absolute: x * sqrt(d) + PE[t]. Returns (x, None) so every encoder treats
    positional outputs alike."""

    def table(self, n: int) -> Tensor:
        return sinusoids(torch.arange(n), self.d_model)

    def forward(self, x: Tensor, offset: int = 0) -> tuple[Tensor, None]:
        """x (B, T, D) at positions offset .. offset + T - 1 (a decoder's next token: T = 1)."""
        t = x.shape[1]
        return self.dropout(x * self.xscale + self._get(offset + t, x)[offset : offset + t]), None


class RelPositionalEncoding(_Cached):
    """ESPnet's `rel_pos` (rel_pos_type "latest", Transformer-XL style): x * sqrt(d) and
    embeddings of relative positions T-1, ..., 0, ..., -(T-1): `(1, 2T-1, D)`."""

    def table(self, n: int) -> Tensor:
        # row c + r holds relative position -r for the centre c = n - 1
        return sinusoids(torch.arange(n - 1, -n, -1), self.d_model)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = x.shape[1]
        table = self._get(t, x)
        centre = (table.shape[0] - 1) // 2
        pos_emb = table[centre - t + 1 : centre + t].unsqueeze(0)
        return self.dropout(x * self.xscale), self.dropout(pos_emb)


class LegacyRelPositionalEncoding(_Cached):
    """ESPnet's `legacy_rel_pos` (rel_pos_type "legacy", the default of ESPnet's Conformer
    and of most models published before 2021): x * sqrt(d) and `(1, T, D)` embeddings of
    the positions L-1, L-2, ..., L-T, where L = max(max_len, T).

    The positions count down from the table's end, not from T - 1, so they depend on
    `max_len` (ESPnet's `max_pos_emb_len`): a model must be run with the max_len it was
    trained with. (ESPnet keeps a table grown past max_len for later calls; here L is
    worked out per call, which is the same for every utterance of at most max_len frames.)
    """

    def __init__(self, d_model: int, dropout_rate: float, max_len: int = 5000):
        super().__init__(d_model, dropout_rate)
        self.max_len = max_len

    def table(self, n: int) -> Tensor:
        return sinusoids(torch.arange(n - 1, -1, -1), self.d_model)  # positions n-1 .. 0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = x.shape[1]
        if t > self.max_len:
            table = self.table(t).to(x)
        else:
            if self._table is None:
                self._table = self.table(self.max_len)
            table = self._get(t, x)
        return self.dropout(x * self.xscale), self.dropout(table[:t].unsqueeze(0))


class NoPositionalEncoding(nn.Module):
    """For attention that carries position itself (RoPE): dropout only."""

    def __init__(self, d_model: int, dropout_rate: float):
        super().__init__()
        self.dropout = Dropout(dropout_rate)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return self.dropout(x), None


def rotate_half(x: Tensor) -> Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al. 2021): rotate channel pairs of q and k by position-dependent
    angles so that q.k depends on relative position. Applied inside attention."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """q, k: (B, H, T, d) -> rotated (B, H, T, d)."""
        t = torch.arange(q.shape[-2], device=q.device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
