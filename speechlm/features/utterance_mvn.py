"""Per-utterance mean (and variance) normalisation: ESPnet's `UtteranceMVN`, the
`normalize` an ESPnet ASR config gets when it names none.

    x[t] <- (x[t] - mean) / std     mean and std per feature dimension, over the
                                    utterance's own frames (padding excluded)

ESPnet's defaults: means only (`norm_vars: false`). Equal to ESPnet's output on every real
frame of a single utterance and, for means only, of a padded batch. Two deliberate
differences on padded batches: padded frames come out as 0 here (ESPnet leaves them at
-mean), and with norm_means and norm_vars both on, ESPnet's variance also counts the padded
frames (each adds mean^2), so there an utterance's features depend on the batch it is in;
here they do not.
"""
from __future__ import annotations

from torch import Tensor, nn

from speechlm.features.cmvn import valid_frame_mask


class UtteranceMVN(nn.Module):
    """feats (B, T, D), lengths (B,) -> normalised feats (B, T, D), lengths. No state."""

    def __init__(self, norm_means: bool = True, norm_vars: bool = False, eps: float = 1e-20):
        super().__init__()
        self.norm_means = norm_means
        self.norm_vars = norm_vars
        self.eps = eps

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        real = valid_frame_mask(lengths, feats.shape[1]).unsqueeze(-1) if lengths is not None else None
        x = feats if real is None else feats.masked_fill(~real, 0.0)
        count = float(feats.shape[1]) if lengths is None else lengths.to(x.dtype).clamp_min(1).view(-1, 1, 1)
        mean = x.sum(dim=1, keepdim=True) / count
        centred = x - mean
        if real is not None:
            centred = centred.masked_fill(~real, 0.0)
        if self.norm_vars:
            std = (centred.square().sum(dim=1, keepdim=True) / count).sqrt().clamp_min(self.eps)
        if self.norm_means:
            x = centred
        if self.norm_vars:
            x = x / std
        return x, lengths

    def extra_repr(self) -> str:
        return f"norm_means={self.norm_means}, norm_vars={self.norm_vars}"
