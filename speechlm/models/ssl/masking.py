"""Which frames a self-supervised model hides: wav2vec 2.0 / HuBERT span masks and BEST-RQ's
noise fill.

`span_mask` is fairseq's `compute_mask_indices` with mask_type "static" and no_overlap False,
drawn per utterance on its own length (wav2vec 2.0, Baevski et al. 2020; HuBERT and BEST-RQ
use the same masks). Utterance b of length n gets

    k = max(min_masks, floor(mask_prob * n / mask_length + u)),   u ~ U[0, 1)

spans of mask_length frames (the `+ u` rounds randomly, so E[k] = mask_prob * n / L when
min_masks does not bind), their starts drawn without replacement from [0, n - L]. Spans may
overlap, so fewer than mask_prob of the frames end up masked: a frame is left alone when none
of the L starts that would cover it is drawn, about (1 - L/n)^k ~ exp(-mask_prob), hence a
masked fraction near 1 - exp(-mask_prob). For mask_prob 0.65, L 10, n 500 the exact
expectation (edges included) is 49.1%; the paper's "about 49%".

Short utterances follow fairseq: when there are no more start positions than spans
(n - L + 1 <= k), starts come from [0, k] and spans are cut at the utterance end.

With same_count=True (fairseq's require_same_masks, its default in wav2vec 2.0 pretraining)
every utterance of the batch is then thinned, by unmasking frames chosen at random, to the
batch's smallest masked count, so the masked frames gather into a dense (B, M) tensor. The
thinning breaks spans (as in fairseq); masked runs are unions of whole spans only with
same_count=False.
"""
from __future__ import annotations

import torch
from torch import Tensor


def span_mask(lengths: Tensor, max_len: int, mask_prob: float, mask_length: int, min_masks: int = 2,
              generator: torch.Generator | None = None, same_count: bool = True) -> Tensor:
    """lengths (B,) -> (B, max_len) bool, True on masked frames; padding is never masked.

    Vectorised over the batch: each utterance's span starts are the first k of a random
    permutation of its start positions (random keys, argsorted), and the spans are scattered
    into the mask at once.
    """
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    out_device = lengths.device
    device = generator.device if generator is not None else out_device
    lengths = lengths.to(device=device, dtype=torch.long).clamp(max=max_len)
    batch = lengths.shape[0]

    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    num = (mask_prob * lengths.double() / mask_length + u).long().clamp(min=min_masks)
    num_starts = lengths - mask_length + 1
    num_starts = torch.where(num_starts <= num, num + 1, num_starts)  # fairseq's short-utterance rule
    num_starts = torch.minimum(num_starts, lengths)
    num = torch.minimum(num, num_starts)  # an empty utterance gets no span
    max_num = int(num.max()) if batch else 0
    if max_num == 0:
        return torch.zeros(batch, max_len, dtype=torch.bool, device=out_device)

    # A random permutation of each row's start positions; its first num[b] entries are the starts.
    positions = torch.arange(int(num_starts.max()), device=device)
    keys = torch.rand(batch, positions.numel(), generator=generator, device=device, dtype=torch.float64)
    keys = keys.masked_fill(positions >= num_starts.unsqueeze(1), 2.0)  # past the row's range: last
    starts = keys.argsort(dim=1)[:, :max_num]  # (B, S)
    frames = starts.unsqueeze(-1) + torch.arange(mask_length, device=device)  # (B, S, L)
    used = (torch.arange(max_num, device=device) < num.unsqueeze(1)).unsqueeze(-1)
    used = used & (frames < lengths.view(-1, 1, 1))
    frames = torch.where(used, frames, max_len)  # unused spans write to a spare column
    mask = torch.zeros(batch, max_len + 1, dtype=torch.bool, device=device)
    mask.scatter_(1, frames.view(batch, -1), True)
    mask = mask[:, :max_len]

    if same_count:
        mask = _thin_to_min_count(mask, generator)
    return mask.to(out_device)


def _thin_to_min_count(mask: Tensor, generator: torch.Generator | None) -> Tensor:
    """Keep, per row, a random subset of the masked frames of the size of the smallest row."""
    keep = int(mask.sum(dim=1).min())
    keys = torch.rand(mask.shape, generator=generator, device=mask.device, dtype=torch.float64)
    order = keys.masked_fill(~mask, 2.0).argsort(dim=1)  # masked frames first, in random order
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(mask.shape[1], device=mask.device).expand_as(order))
    return rank < keep


def noise_mask_features(feats: Tensor, mask: Tensor, std: float = 0.1,
                        generator: torch.Generator | None = None) -> Tensor:
    """BEST-RQ's masking (Chiu et al. 2022): feats (B, T, F), mask (B, T) bool -> (B, T, F) with
    the masked frames replaced by N(0, std^2) noise; other frames (and their gradients) kept."""
    device = generator.device if generator is not None else feats.device
    noise = torch.randn(int(mask.sum()), feats.shape[-1], generator=generator, device=device,
                        dtype=feats.dtype) * std
    out = feats.clone()
    out[mask] = noise.to(feats.device)
    return out
