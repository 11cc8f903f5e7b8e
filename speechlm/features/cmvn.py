"""Global cepstral mean and variance normalisation, with ESPnet-compatible statistics.

The stats file is ESPnet's `feats_stats.npz` (what `collect_stats` writes and `GlobalMVN`
reads): `count` (scalar frame count), `sum` (D,) and `sum_square` (D,). An ESPnet user's
file loads unchanged, and ours loads in ESPnet. Kaldi-style `.npy` stats, shape (2, D + 1)
with the count in the last column of row 0, load too, as ESPnet allows.
"""

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from speechlm.atomic import atomic_path

PathLike = Union[str, os.PathLike]

# ESPnet's GlobalMVN default: a floor on the variance, so constant dims divide by ~1e-10.
VARIANCE_FLOOR = 1e-20


def valid_frame_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on real frames."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(-1)


@dataclass
class CMVNStats:
    """Running per-dimension sums over frames; float64 so that millions of frames add up exactly
    enough. count: frames seen; sum, sum_square: (D,)."""

    count: int
    sum: np.ndarray
    sum_square: np.ndarray

    @classmethod
    def zeros(cls, dim: int) -> "CMVNStats":
        return cls(0, np.zeros(dim, dtype=np.float64), np.zeros(dim, dtype=np.float64))

    @property
    def dim(self) -> int:
        return self.sum.shape[0]

    @torch.no_grad()
    def accumulate(self, feats: Tensor, lengths: Optional[Tensor] = None) -> "CMVNStats":
        """Add the real frames of a padded batch: feats (B, T, D), lengths (B,). Returns self."""
        if lengths is None:
            frames = feats.reshape(-1, feats.shape[-1])
        else:
            frames = feats[valid_frame_mask(lengths.to(feats.device), feats.shape[1])]  # (N, D)
        frames = frames.double()
        self.count += frames.shape[0]
        self.sum += frames.sum(dim=0).cpu().numpy()
        self.sum_square += frames.square().sum(dim=0).cpu().numpy()
        return self

    def merge(self, other: "CMVNStats") -> "CMVNStats":
        """Stats of both sets of frames together (e.g. from several jobs), as a new object."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge stats of dimension {self.dim} and {other.dim}")
        return CMVNStats(self.count + other.count, self.sum + other.sum, self.sum_square + other.sum_square)

    __add__ = merge

    def mean(self) -> np.ndarray:
        """(D,) float64."""
        if self.count == 0:
            raise ValueError("no frames accumulated")
        return self.sum / self.count

    def std(self, variance_floor: float = VARIANCE_FLOOR) -> np.ndarray:
        """(D,) float64, computed as ESPnet's GlobalMVN does: sqrt(max(E[x^2] - E[x]^2, floor))."""
        mean = self.mean()
        variance = self.sum_square / self.count - mean * mean
        return np.sqrt(np.maximum(variance, variance_floor))

    def save(self, path: PathLike) -> None:
        """Write ESPnet's npz atomically: a reader (or a crash) never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz"
            np.savez(
                f,
                count=np.asarray(self.count, dtype=np.int64),
                sum=self.sum.astype(np.float64),
                sum_square=self.sum_square.astype(np.float64),
            )

    @classmethod
    def load(cls, path: PathLike) -> "CMVNStats":
        """Read ESPnet's npz (count, sum, sum_square) or Kaldi-style (2, D + 1) npy stats.
        Plain numeric arrays only (`allow_pickle=False`): a pickle, or an object array in
        the npz, is refused with a ValueError naming the file, and nothing in it runs."""
        try:
            stats = np.load(path, allow_pickle=False)
            if isinstance(stats, np.ndarray):  # a .npy file loads as an array, an .npz as a mapping
                if stats.ndim != 2 or stats.shape[0] < 2:
                    raise ValueError(f"a (2, D + 1) array expected, got shape {stats.shape}")
                count, sums, squares = stats[0, -1], stats[0, :-1], stats[1, :-1]
            else:
                with stats:
                    count, sums, squares = stats["count"], stats["sum"], stats["sum_square"]
            return cls(int(round(float(count))), np.asarray(sums, np.float64), np.asarray(squares, np.float64))
        except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:  # np.load: ValueError for a pickle
            raise ValueError(f"{path}: not CMVN statistics (an npz of count, sum, sum_square or a (2, D + 1) "
                             f"npy of plain numbers): {e}") from None


class GlobalCMVN(nn.Module):
    """(x - mean) / std per feature dimension, with padding left at 0.

    mean and std are (D,) buffers, so they travel in checkpoints: a model with one loads by
    instantiate + load_state_dict alone. In config it is declared by its size and gets its
    statistics at the start of training (`speechlm.models.build`):

        normalize: {_target_: speechlm.features.GlobalCMVN.empty, dim: 80, init_from: data/cmvn.npz}

    `from_stats_file(path)` and the tensor constructor build it directly.
    """

    def __init__(self, mean: Tensor, std: Tensor, norm_means: bool = True, norm_vars: bool = True):
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"mean {tuple(mean.shape)} and std {tuple(std.shape)} must both be (D,)")
        self.norm_means = norm_means
        self.norm_vars = norm_vars
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def empty(cls, dim: int, norm_means: bool = True, norm_vars: bool = True) -> "GlobalCMVN":
        """Identity statistics (mean 0, std 1) of `dim` features, to be replaced by
        `initialize_from(stats_file)` or a checkpoint's state_dict."""
        return cls(torch.zeros(dim), torch.ones(dim), norm_means, norm_vars)

    def initialize_from(self, path: PathLike, variance_floor: float = VARIANCE_FLOOR) -> None:
        """Statistics from a stats file (`init_from:` in config, at the start of training)."""
        stats = CMVNStats.load(path)
        if stats.dim != self.mean.numel():
            raise ValueError(f"{path}: statistics of dimension {stats.dim}, the features have {self.mean.numel()}")
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(stats.mean()))
            self.std.copy_(torch.from_numpy(stats.std(variance_floor)))

    @classmethod
    def from_stats(cls, stats: CMVNStats, norm_means: bool = True, norm_vars: bool = True,
                   variance_floor: float = VARIANCE_FLOOR) -> "GlobalCMVN":
        mean, std = torch.from_numpy(stats.mean()), torch.from_numpy(stats.std(variance_floor))
        return cls(mean, std, norm_means, norm_vars)

    @classmethod
    def from_stats_file(cls, path: PathLike, norm_means: bool = True, norm_vars: bool = True,
                        variance_floor: float = VARIANCE_FLOOR) -> "GlobalCMVN":
        return cls.from_stats(CMVNStats.load(path), norm_means, norm_vars, variance_floor)

    def forward(self, feats: Tensor, lengths: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """feats (B, T, D), lengths (B,) -> normalised feats (B, T, D), lengths."""
        if self.norm_means:
            feats = feats - self.mean.to(feats.dtype)
        if self.norm_vars:
            feats = feats / self.std.to(feats.dtype)
        if lengths is not None:
            feats = feats.masked_fill(~valid_frame_mask(lengths, feats.shape[1]).unsqueeze(-1), 0.0)
        return feats, lengths

    def inverse(self, feats: Tensor, lengths: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """Undo `forward`: feats (B, T, D) -> (B, T, D), padding left at 0."""
        if self.norm_vars:
            feats = feats * self.std.to(feats.dtype)
        if self.norm_means:
            feats = feats + self.mean.to(feats.dtype)
        if lengths is not None:
            feats = feats.masked_fill(~valid_frame_mask(lengths, feats.shape[1]).unsqueeze(-1), 0.0)
        return feats, lengths

    def extra_repr(self) -> str:
        return f"dim={self.mean.numel()}, norm_means={self.norm_means}, norm_vars={self.norm_vars}"
