"""wav2vec 2.0's contrastive task: negative sampling, logits against a hand-written loop and
transformers' `compute_contrastive_logits`, neg_is_pos, loss and accuracy."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from speechlm.models.ssl.contrastive import (
    contrastive_accuracy, contrastive_logits, contrastive_loss, sample_negatives,
)
from speechlm.models.ssl.masking import span_mask


def test_negatives_never_index_the_positive_and_cover_the_others():
    mask = span_mask(torch.tensor([300, 250, 200]), 300, 0.65, 10, generator=torch.Generator().manual_seed(0))
    m = int(mask.sum(dim=1)[0])
    idx = sample_negatives(mask, 100, generator=torch.Generator().manual_seed(1))
    assert idx.shape == (3, m, 100) and idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < m
    assert not (idx == torch.arange(m).view(1, m, 1)).any()
    # Uniform over the other frames: frame 5 of 20, 19 000 draws, about 1000 per other frame.
    counts = torch.bincount(sample_negatives(torch.ones(1, 20, dtype=torch.bool), 19000)[0, 5], minlength=20)
    assert counts[5] == 0 and counts[torch.arange(20) != 5].sub(1000).abs().max() < 150
    again = sample_negatives(mask, 100, generator=torch.Generator().manual_seed(1))
    assert torch.equal(idx, again)


def test_sample_negatives_needs_equal_counts():
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :4] = True
    mask[1, :3] = True
    with pytest.raises(ValueError, match="same number"):
        sample_negatives(mask, 2)


def loop_logits(context, targets, index, temperature):
    """One frame, one candidate at a time: cosine = dot / (|a| |b|); an equal negative: -inf."""
    batch, m, k = index.shape
    out = torch.empty(batch, m, 1 + k, dtype=torch.float64)
    for b in range(batch):
        for i in range(m):
            c = context[b, i].double()
            candidates = [targets[b, i]] + [targets[b, int(j)] for j in index[b, i]]
            for n, t in enumerate(candidates):
                if n > 0 and torch.equal(t, targets[b, i]):
                    out[b, i, n] = float("-inf")
                else:
                    t = t.double()
                    out[b, i, n] = (c @ t) / (c.norm() * t.norm()) / temperature
    return out


def loop_loss(logits):
    total = 0.0
    for row in logits.reshape(-1, logits.shape[-1]).tolist():
        z = max(row)
        total += -(row[0] - z - torch.tensor([v - z for v in row]).exp().sum().log().item())
    return total


def test_logits_and_loss_match_a_loop():
    g = torch.Generator().manual_seed(2)
    context, targets = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    targets[1, 3] = targets[1, 0]  # two frames with the same target: neg_is_pos
    index = torch.tensor([[[1, 2, 3], [0, 4, 2], [4, 4, 1], [0, 1, 2], [3, 2, 0]],
                          [[3, 1, 2], [0, 4, 3], [3, 0, 1], [0, 2, 4], [3, 1, 0]]])
    logits = contrastive_logits(context, targets, index, temperature=0.1)
    expected = loop_logits(context, targets, index, 0.1)
    assert logits.shape == (2, 5, 4)
    assert torch.equal(torch.isinf(logits), torch.isinf(expected))
    assert torch.isinf(logits[1, 0, 1]) and torch.isinf(logits[1, 3, 1]) and torch.isinf(logits).sum() == 2
    assert (logits[1, 0, 1] < 0) and torch.isfinite(logits[..., 0]).all()
    finite = torch.isfinite(expected)
    assert torch.allclose(logits[finite].double(), expected[finite], atol=1e-5)
    assert contrastive_loss(logits).item() == pytest.approx(loop_loss(expected), abs=1e-4)
    # Summed, as fairseq: the mean over frames is the sum over the frame count.
    mean = F.cross_entropy(expected.reshape(-1, 4), torch.zeros(10, dtype=torch.long))
    assert contrastive_loss(logits).item() == pytest.approx(10 * mean.item(), rel=1e-5)


def test_matches_transformers_logits():
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2ForPreTraining

    g = torch.Generator().manual_seed(3)
    context, targets = torch.randn(3, 20, 8, generator=g), torch.randn(3, 20, 8, generator=g)
    index = sample_negatives(torch.ones(3, 20, dtype=torch.bool), 5, generator=g)
    negatives = torch.stack([targets[b, index[b]] for b in range(3)]).permute(2, 0, 1, 3)  # (K, B, M, D)
    theirs = Wav2Vec2ForPreTraining.compute_contrastive_logits(targets[None], negatives, context, 0.1)
    assert torch.allclose(contrastive_logits(context, targets, index, 0.1), theirs.permute(1, 2, 0), atol=1e-6)


def test_perfect_context_is_always_right_and_scores_lower_loss():
    g = torch.Generator().manual_seed(4)
    targets = torch.randn(4, 50, 32, generator=g)  # distinct with probability 1
    index = sample_negatives(torch.ones(4, 50, dtype=torch.bool), 20, generator=g)
    perfect = contrastive_logits(targets, targets, index)
    noise = contrastive_logits(torch.randn(4, 50, 32, generator=g), targets, index)
    assert contrastive_accuracy(perfect).item() == 1.0
    assert contrastive_accuracy(noise).item() < 0.3
    assert contrastive_loss(perfect) < contrastive_loss(noise)
    assert torch.isfinite(perfect).all()


def test_accuracy_counts_ties_as_fairseq():
    logits = torch.tensor([[3.0, 1.0, 2.0],                 # right
                           [1.0, 3.0, 2.0],                 # wrong
                           [2.0, 2.0, 2.0],                 # constant row: wrong
                           [2.0, float("-inf"), 1.0]])      # right: the -inf negative is out
    assert contrastive_accuracy(logits).item() == pytest.approx(0.5)
