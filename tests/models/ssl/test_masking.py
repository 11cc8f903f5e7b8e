"""span_mask against transformers' `_compute_mask_indices` and the analytical expectation;
the span, padding, min_masks and same_count guarantees; BEST-RQ's noise fill."""
from __future__ import annotations

from math import comb, floor

import numpy as np
import torch

from speechlm.models.ssl.masking import noise_mask_features, span_mask
from speechlm.nn.masks import valid_mask

P, L, N = 0.65, 10, 500


def expected_fraction(n: int, mask_prob: float, mask_length: int) -> float:
    """E[masked fraction] of an n-frame utterance: k = floor(x + u) spans, x = p n / L, is
    floor(x) + 1 with probability frac(x); frame t is missed when none of the c_t starts
    covering it is among the k drawn (without replacement) from the n - L + 1 starts."""
    starts = n - mask_length + 1
    x = mask_prob * n / mask_length
    k0, frac = floor(x), x - floor(x)

    def for_k(k: int) -> float:
        covering = [min(t, n - mask_length) - max(0, t - mask_length + 1) + 1 for t in range(n)]
        return sum(1 - comb(starts - c, k) / comb(starts, k) for c in covering) / n

    return (1 - frac) * for_k(k0) + frac * for_k(k0 + 1)


def runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    padded = torch.cat([torch.zeros(1, dtype=torch.int8), row.to(torch.int8), torch.zeros(1, dtype=torch.int8)])
    edges = padded.diff()
    return ((edges == -1).nonzero() - (edges == 1).nonzero()).flatten().tolist()


def test_masked_fraction_matches_transformers_and_the_expectation():
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

    g = torch.Generator().manual_seed(0)
    ours = span_mask(torch.full((2000,), N), N, P, L, min_masks=2, generator=g, same_count=False)
    ours = ours.float().mean().item()
    np.random.seed(0)  # transformers draws one rounding offset per call: average over many calls
    theirs = np.mean([_compute_mask_indices((100, N), P, L, min_masks=2).mean() for _ in range(40)])
    expected = expected_fraction(N, P, L)
    assert abs(expected - 0.491) < 1e-3  # the module docstring's figure
    assert abs(ours - theirs) < 0.02
    assert abs(ours - expected) < 0.01


def test_spans_are_whole_and_padding_is_never_masked():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([500, 321, 123, 40, 25])
    for same_count in (False, True):
        mask = span_mask(lengths, 520, P, L, generator=g, same_count=same_count)
        assert mask.shape == (5, 520)
        assert not mask[~valid_mask(lengths, 520)].any()
    for _ in range(20):
        mask = span_mask(lengths, 520, P, L, generator=g, same_count=False)
        for row in mask:
            assert min(runs(row)) >= L  # unions of L-long spans


def test_min_masks_on_short_utterances():
    g = torch.Generator().manual_seed(2)
    # mask_length 1: spans are single frames at distinct starts, so exactly min_masks frames.
    mask = span_mask(torch.full((200,), 50), 50, 0.01, 1, min_masks=2, generator=g, same_count=False)
    assert (mask.sum(dim=1) == 2).all()
    # 15 frames, L 10: p n / L < 1, yet two distinct spans cover at least L + 1 frames.
    mask = span_mask(torch.full((200,), 15), 15, P, L, min_masks=2, generator=g, same_count=False)
    assert (mask.sum(dim=1) >= L + 1).all()
    # No more starts than spans (fairseq's rule: starts from [0, k], spans cut at the end).
    mask = span_mask(torch.tensor([10, 3, 0]), 12, P, L, min_masks=2, generator=g, same_count=False)
    assert mask[0].sum() >= L - 1 and mask[1].sum() >= 2 and not mask[2].any()
    assert not mask[~valid_mask(torch.tensor([10, 3, 0]), 12)].any()


def test_same_count_thins_to_the_batch_minimum():
    lengths = torch.tensor([500, 400, 260, 90])
    free = span_mask(lengths, 500, P, L, generator=torch.Generator().manual_seed(3), same_count=False)
    same = span_mask(lengths, 500, P, L, generator=torch.Generator().manual_seed(3), same_count=True)
    counts = same.sum(dim=1)
    assert (counts == free.sum(dim=1).min()).all()
    assert not (same & ~free).any()  # thinning only unmasks
    m = int(counts[0])
    assert torch.zeros(4, 500, 8)[same].view(4, m, 8).shape == (4, m, 8)  # gathers densely


def test_seeded_generator_reproduces():
    lengths = torch.tensor([500, 300, 77])
    a = span_mask(lengths, 500, P, L, generator=torch.Generator().manual_seed(7))
    b = span_mask(lengths, 500, P, L, generator=torch.Generator().manual_seed(7))
    c = span_mask(lengths, 500, P, L, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noise_mask_features():
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(3, 400, 80, generator=g).add(5.0).requires_grad_()
    mask = span_mask(torch.tensor([400, 350, 200]), 400, 0.5, 4, generator=g)
    out = noise_mask_features(feats, mask, std=0.1, generator=torch.Generator().manual_seed(5))
    again = noise_mask_features(feats, mask, std=0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, again)
    assert torch.equal(out[~mask], feats[~mask])
    noise = out[mask]
    assert abs(noise.mean().item()) < 0.01 and abs(noise.std().item() - 0.1) < 0.005
    out.sum().backward()
    assert torch.equal(feats.grad, (~mask).unsqueeze(-1).expand_as(feats).float())
