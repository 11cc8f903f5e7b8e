"""SpecAugment (Park et al. 2019) with length-adaptive time masks (Park et al. 2020).

Over a padded batch of features `(B, T, F)`: optional time warp, then frequency masks, then
time masks, in training mode only. Masks are drawn for the whole batch at once (random
starts and widths compared against an `arange`) and never touch padding frames.

Adaptive time masks ("SpecAugment on large scale datasets", Park et al. 2020): utterance b
of length L gets min(max_time_masks, floor(multiplicity * L)) masks, each at most
floor(max_ratio * L) frames wide, so short and long utterances lose similar fractions
(the paper's pM = 0.04, pS = 0.05, cap 20 are the defaults). With adaptive_time_masks=False,
every utterance gets num_time_masks masks of at most time_mask_width frames (capped at L).
"""

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def uniform_integers(high: Tensor, shape, generator: Optional[torch.Generator], device) -> Tensor:
    """Integers uniform on [0, high] (inclusive), elementwise; high (long) broadcasts to shape."""
    sample_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=sample_device).to(device)
    return torch.minimum((u * (high + 1)).long(), high)  # min: guards u*(high+1) rounding up


def span_mask(starts: Tensor, widths: Tensor, size: int) -> Tensor:
    """Union of spans [start, start + width) per row: starts, widths (B, N) -> (B, size) bool."""
    positions = torch.arange(size, device=starts.device)
    inside = (positions >= starts.unsqueeze(-1)) & (positions < (starts + widths).unsqueeze(-1))
    return inside.any(dim=1)


def random_spans(limit: Tensor, max_width: Tensor, num: int, generator, device) -> Tuple[Tensor, Tensor]:
    """`num` spans per row, width uniform on [0, max_width], lying inside [0, limit).

    limit, max_width: (B, 1) long (max_width <= limit) -> starts, widths (B, num).
    """
    batch = limit.shape[0]
    widths = uniform_integers(max_width, (batch, num), generator, device)
    starts = uniform_integers(limit - widths, (batch, num), generator, device)
    return starts, widths


class SpecAugment(nn.Module):
    """Time warp, frequency masks and time masks on (B, T, F) features; identity in eval mode.

    num_freq_masks masks of width uniform on [0, freq_mask_width] bins. Time masks: adaptive
    to each utterance's length (default) or a fixed count; see the module docstring.
    time_warp_window W > 0 warps each utterance ESPnet-style: a centre c in [W, L - W) moves by
    a displacement in [-W, W], and the two sides are resized to meet there with
    `F.interpolate` (time_warp_mode). W = 0 turns time warp off. Masked values become
    mask_value (0.0, i.e. the mean after global CMVN).
    """

    def __init__(
        self,
        num_freq_masks: int = 2,
        freq_mask_width: int = 27,
        adaptive_time_masks: bool = True,
        time_mask_multiplicity: float = 0.04,
        time_mask_max_ratio: float = 0.05,
        max_time_masks: int = 20,
        num_time_masks: int = 2,
        time_mask_width: int = 40,
        time_warp_window: int = 5,
        time_warp_mode: str = "bicubic",
        mask_value: float = 0.0,
    ):
        super().__init__()
        self.num_freq_masks = num_freq_masks
        self.freq_mask_width = freq_mask_width
        self.adaptive_time_masks = adaptive_time_masks
        self.time_mask_multiplicity = time_mask_multiplicity
        self.time_mask_max_ratio = time_mask_max_ratio
        self.max_time_masks = max_time_masks
        self.num_time_masks = num_time_masks
        self.time_mask_width = time_mask_width
        self.time_warp_window = time_warp_window
        self.time_warp_mode = time_warp_mode
        self.mask_value = mask_value

    def forward(
        self, feats: Tensor, lengths: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor]:
        """feats (B, T, F), lengths (B,) frames (default all T) -> augmented (B, T, F), lengths.

        generator makes the draw reproducible; without it the global RNG is used.
        """
        batch, max_len, num_bins = feats.shape
        if lengths is None:
            lengths = torch.full((batch,), max_len, dtype=torch.long, device=feats.device)
        if not self.training:
            return feats, lengths
        if self.time_warp_window > 0:
            feats = self.time_warp(feats, lengths, generator)

        real = torch.arange(max_len, device=feats.device) < lengths.unsqueeze(-1)  # (B, T)
        masked = self.time_masks(lengths, max_len, generator).unsqueeze(-1)  # (B, T, 1)
        if self.num_freq_masks > 0:
            freq = self.freq_masks(batch, num_bins, feats.device, generator).unsqueeze(1)  # (B, 1, F)
            masked = masked | freq
        return feats.masked_fill(masked & real.unsqueeze(-1), self.mask_value), lengths

    def freq_masks(self, batch: int, num_bins: int, device, generator=None) -> Tensor:
        """(B, F) bool, True on masked bins."""
        limit = torch.full((batch, 1), num_bins, dtype=torch.long, device=device)
        starts, widths = random_spans(
            limit, limit.clamp(max=self.freq_mask_width), self.num_freq_masks, generator, device
        )
        return span_mask(starts, widths, num_bins)

    def time_mask_counts(self, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """Per utterance (B,) lengths -> (number of time masks, max width), both (B,) long."""
        if not self.adaptive_time_masks:
            counts = torch.full_like(lengths, self.num_time_masks)
            return counts, lengths.clamp(max=self.time_mask_width)
        # float64 and a hair of slack so that e.g. 0.04 * 25 floors to 1, not 0.
        frames = lengths.double()
        counts = torch.floor(frames * self.time_mask_multiplicity + 1e-9).long()
        widths = torch.floor(frames * self.time_mask_max_ratio + 1e-9).long()
        return counts.clamp(max=self.max_time_masks), torch.minimum(widths, lengths)

    def time_masks(self, lengths: Tensor, max_len: int, generator=None) -> Tensor:
        """(B, T) bool, True on masked frames, all within each utterance's length."""
        counts, max_widths = self.time_mask_counts(lengths)
        num = self.max_time_masks if self.adaptive_time_masks else self.num_time_masks
        if num == 0:
            return torch.zeros(lengths.shape[0], max_len, dtype=torch.bool, device=lengths.device)
        starts, widths = random_spans(
            lengths.unsqueeze(-1), max_widths.unsqueeze(-1), num, generator, lengths.device
        )
        # Draw the same number for every utterance, then keep only each one's first counts[b].
        in_use = torch.arange(num, device=lengths.device) < counts.unsqueeze(-1)
        return span_mask(starts, widths * in_use, max_len)

    def time_warp(self, feats: Tensor, lengths: Tensor, generator=None) -> Tensor:
        """ESPnet-style time warp of each utterance's real frames: (B, T, F) -> (B, T, F).

        A loop over utterances: each has its own length, centre and resize sizes.
        """
        window = self.time_warp_window
        sample_device = generator.device if generator is not None else feats.device
        draws = torch.rand(lengths.shape[0], 2, generator=generator, device=sample_device).tolist()
        warped = feats.clone()
        for b, (length, (u_centre, u_shift)) in enumerate(zip(lengths.tolist(), draws)):
            if length - window <= window:  # too short to warp, as in ESPnet
                continue
            centre = window + int(u_centre * (length - 2 * window))  # in [W, L - W)
            shift = min(int(u_shift * (2 * window + 1)), 2 * window) - window  # in [-W, W]
            boundary = min(max(centre + shift, 1), length - 1)  # neither side may vanish
            utterance = feats[b, :length].unsqueeze(0).unsqueeze(0)  # (1, 1, L, F)
            num_bins = utterance.shape[-1]
            left = F.interpolate(utterance[:, :, :centre], size=(boundary, num_bins),
                                 mode=self.time_warp_mode, align_corners=False)
            right = F.interpolate(utterance[:, :, centre:], size=(length - boundary, num_bins),
                                  mode=self.time_warp_mode, align_corners=False)
            warped[b, :length] = torch.cat([left, right], dim=2)[0, 0]
        return warped

    def extra_repr(self) -> str:
        if self.adaptive_time_masks:
            time = (f"adaptive time masks: min({self.max_time_masks}, {self.time_mask_multiplicity} L) "
                    f"of <= {self.time_mask_max_ratio} L")
        else:
            time = f"time masks: {self.num_time_masks} of <= {self.time_mask_width}"
        return (f"freq masks: {self.num_freq_masks} of <= {self.freq_mask_width}, {time}, "
                f"time_warp_window={self.time_warp_window}, mask_value={self.mask_value}")
