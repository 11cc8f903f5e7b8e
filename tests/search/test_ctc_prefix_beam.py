"""CTC prefix beam search against brute force over every alignment (tiny T and V), greedy
decoding, and torch's `ctc_loss` (the exact probability of a label sequence)."""
from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from speechlm.search.ctc_greedy import ctc_greedy_search
from speechlm.search.ctc_prefix_beam import (
    candidate_tokens,
    ctc_prefix_beam_search,
    ctc_prefix_beam_search_batch,
)


def random_log_probs(T: int, V: int, seed: int, sharpness: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(sharpness * torch.randn(T, V, generator=g), dim=-1)


def label_sequence_log_probs(x: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """Every label sequence's log-probability, summing all V**T alignments (float64)."""
    x = x.double().numpy()
    T, V = x.shape
    total = defaultdict(lambda: -math.inf)
    for path in itertools.product(range(V), repeat=T):
        labels = tuple(c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1]))
        total[labels] = np.logaddexp(total[labels], x[np.arange(T), path].sum())
    return dict(total)


def sequence_log_prob(x: torch.Tensor, tokens: list[int], blank: int = 0) -> float:
    """log P(tokens | x) from torch's CTC loss. x: (T, V)."""
    nll = torch.nn.functional.ctc_loss(
        x.double()[:, None], torch.tensor([tokens]), torch.tensor([x.size(0)]),
        torch.tensor([len(tokens)]), blank=blank, reduction="sum",
    )
    return -nll.item()


@pytest.mark.parametrize("seed,T,V", [(0, 5, 3), (1, 6, 3), (2, 5, 4), (3, 6, 4)])
def test_large_beam_is_exact(seed, T, V):
    x = random_log_probs(T, V, seed)
    exact = label_sequence_log_probs(x)
    hyps = ctc_prefix_beam_search(x, beam_size=len(exact))
    assert tuple(hyps[0].tokens) == max(exact, key=exact.get)
    assert len(hyps) == len(exact)
    for h in hyps:  # every label sequence, each with its exact probability
        assert h.score == pytest.approx(exact[tuple(h.tokens)], abs=1e-5)
    assert hyps[0].score == pytest.approx(sequence_log_prob(x, hyps[0].tokens), abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_beam_one_is_greedy_on_peaky_posteriors(seed):
    x = random_log_probs(50, 8, seed, sharpness=6.0)
    (greedy,) = ctc_greedy_search(x[None])
    assert ctc_prefix_beam_search(x, beam_size=1)[0].tokens == greedy.tokens


@pytest.mark.parametrize("seed", range(5))
def test_large_beam_never_worse_than_greedy_sequence(seed):
    x = random_log_probs(30, 6, seed, sharpness=1.0)
    (greedy,) = ctc_greedy_search(x[None])
    best = ctc_prefix_beam_search(x, beam_size=32)[0]
    assert best.score >= sequence_log_prob(x, greedy.tokens) - 1e-5
    assert best.score <= sequence_log_prob(x, best.tokens) + 1e-5  # a kept-paths lower bound


def test_token_pruning():
    x = random_log_probs(12, 6, seed=7)
    full = ctc_prefix_beam_search(x, beam_size=8)
    no_op = ctc_prefix_beam_search(x, beam_size=8, token_top_k=5, token_min_log_prob=-math.inf)
    assert [(h.tokens, round(h.score, 5)) for h in full] == [(h.tokens, round(h.score, 5)) for h in no_op]

    allowed = candidate_tokens(x, blank=0, top_k=2, min_log_prob=-2.0)
    for t, tokens in enumerate(allowed):
        assert 0 not in tokens and len(tokens) <= 2
        assert all(x[t, c] >= -2.0 for c in tokens)
        nonblank = x[t, 1:].argsort(descending=True)[:2] + 1
        assert set(tokens) <= set(nonblank.tolist())
    pruned = ctc_prefix_beam_search(x, beam_size=8, token_top_k=2, token_min_log_prob=-2.0)
    usable = set().union(*map(set, allowed))
    assert all(set(h.tokens) <= usable for h in pruned)


def test_batch_with_lengths_equals_per_utterance():
    g = torch.Generator().manual_seed(9)
    x = torch.log_softmax(2 * torch.randn(3, 20, 5, generator=g), dim=-1)
    lengths = torch.tensor([20, 13, 7])
    batch = ctc_prefix_beam_search_batch(x, lengths, beam_size=4, nbest=2)
    for b in range(3):
        alone = ctc_prefix_beam_search(x[b, : lengths[b]], beam_size=4, nbest=2)
        assert [(h.tokens, h.score) for h in batch[b]] == [(h.tokens, h.score) for h in alone]
        assert len(batch[b]) == 2
