"""The vectorised CTC prefix scorer against three references.

- ESPnet's `CTCPrefixScoreTH`, the peer: the same random log-probs (utterances of different
  lengths) and the same random hypotheses, driven step by step through both, full-vocabulary
  and partial scoring, end-of-sentence included; prefix scores agree within 1e-4.
- A slow per-hypothesis forward algorithm over the CTC lattice of the prefix (float64).
- Brute force over every alignment, for a tiny T and V; and torch's `ctc_loss` for the
  end-of-sentence score (the probability of the whole label sequence).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from espnet.nets.ctc_prefix_score import CTCPrefixScoreTH

from speechlm.search.ctc_prefix_score import CTCPrefixScorer

BLANK = 0


def random_log_probs(B: int, T: int, V: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(2.0 * torch.randn(B, T, V, generator=g), dim=-1)


def lattice_prefix_score(x: np.ndarray, prefix: list[int], token: int, blank: int = BLANK) -> float:
    """log psi(prefix + token) for one utterance x (T, V), via the standard CTC lattice.

    alpha over the blank-extended prefix (b, h1, b, ..., hL, b); the new token is first
    emitted at frame t after the prefix is complete at t - 1 (ending in blank, or in hL
    when the new token differs from it).
    """
    T = x.shape[0]
    ext = [blank]
    for c in prefix:
        ext += [c, blank]
    S = len(ext)
    alpha = np.full((T, S), -np.inf)
    alpha[0, 0] = x[0, blank]
    if S > 1:
        alpha[0, 1] = x[0, ext[1]]
    for t in range(1, T):
        for s in range(S):
            terms = [alpha[t - 1, s]]
            if s >= 1:
                terms.append(alpha[t - 1, s - 1])
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                terms.append(alpha[t - 1, s - 2])
            alpha[t, s] = np.logaddexp.reduce(terms) + x[t, ext[s]]
    complete = alpha[:, S - 1].copy()  # prefix complete at t, ending in blank
    if prefix and prefix[-1] != token:
        complete = np.logaddexp(complete, alpha[:, S - 2])
    terms = [x[0, token]] if not prefix else []
    terms += [complete[t - 1] + x[t, token] for t in range(1, T)]
    return float(np.logaddexp.reduce(terms)) if terms else -math.inf


def brute_force_prefix_score(x: np.ndarray, prefix: tuple[int, ...], blank: int = BLANK) -> float:
    """log of the total probability of every alignment whose collapse starts with prefix."""
    T, V = x.shape
    total = -math.inf
    for path in itertools.product(range(V), repeat=T):
        out, prev = [], None
        for c in path:
            if c != blank and c != prev:
                out.append(c)
            prev = c
        if tuple(out[: len(prefix)]) == prefix:
            total = np.logaddexp(total, sum(x[t, c] for t, c in enumerate(path)))
    return float(total)


def test_first_step_equals_brute_force():
    T, V = 5, 4
    x = random_log_probs(1, T, V, seed=0)
    scorer = CTCPrefixScorer(blank=BLANK)
    state = scorer.init_state(x, torch.tensor([T]))
    scores, scored = scorer.score(state)
    state = scorer.select(scored, torch.tensor([0, 0]), torch.tensor([2, 3]))
    scores2, _ = scorer.score(state)
    xn = x[0].double().numpy()
    for c in range(1, V):
        assert scores[0, c].item() == pytest.approx(brute_force_prefix_score(xn, (c,)), abs=1e-5)
        for m, h in enumerate((2, 3)):
            assert scores2[m, c].item() == pytest.approx(brute_force_prefix_score(xn, (h, c)), abs=1e-5)
    assert scores[0, BLANK] == -math.inf


def test_eos_is_whole_sequence_probability_as_ctc_loss():
    B, T, V = 3, 12, 6
    eos = V - 1
    x = random_log_probs(B, T, V, seed=1)
    lengths = torch.tensor([12, 9, 7])
    scorer = CTCPrefixScorer(blank=BLANK, eos=eos)
    state = scorer.init_state(x, lengths)
    prefixes = [[2, 2], [1, 3], [4, 1]]
    for step in range(2):
        _, scored = scorer.score(state)
        state = scorer.select(scored, torch.arange(B), torch.tensor([p[step] for p in prefixes]))
    scores, _ = scorer.score(state)
    nll = torch.nn.functional.ctc_loss(
        x.transpose(0, 1).double(), torch.tensor(prefixes), lengths, torch.tensor([2, 2, 2]),
        blank=BLANK, reduction="none", zero_infinity=False,
    )
    torch.testing.assert_close(scores[:, eos].double(), -nll, atol=1e-4, rtol=0)


def espnet_scores(esp_state, scoring_ids):
    """Cumulative log psi from ESPnet's state, at the scored columns, logzero -> -inf."""
    log_psi = esp_state[1]
    if scoring_ids is not None:
        log_psi = log_psi.gather(1, scoring_ids)
    return log_psi.masked_fill(log_psi < -1e9, -math.inf)


def assert_same_scores(ours, theirs, atol=1e-4):
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    finite = torch.isfinite(ours)
    assert finite.any()
    torch.testing.assert_close(ours[finite], theirs[finite], atol=atol, rtol=0)


@pytest.mark.parametrize("partial", [False, True], ids=["full", "partial"])
def test_matches_espnet_and_lattice_reference(partial):
    B, W, T, V, steps = 3, 4, 14, 7, 5
    eos, sos = V - 1, V - 1
    K = 4
    lengths = torch.tensor([14, 9, 4])  # the last utterance ends before the prefixes do
    x = random_log_probs(B, T, V, seed=2 if partial else 3)
    rng = np.random.default_rng(4)

    esp = CTCPrefixScoreTH(x.clone(), lengths, BLANK, eos)
    esp_state = None
    scorer = CTCPrefixScorer(blank=BLANK, eos=eos)
    state = scorer.init_state(x, lengths)  # one empty prefix per utterance; ESPnet has W copies
    ys = [[] for _ in range(B * W)]

    for step in range(steps):
        N = B * W
        if partial:  # distinct candidates per hypothesis; sometimes blank and eos among them
            ids = np.stack([rng.choice(V, size=K, replace=False) for _ in range(N)])
            ids = torch.from_numpy(ids)
            if step == 0:  # ESPnet's W copies of the empty prefix share their candidates
                ids = ids[::W].repeat_interleave(W, dim=0)
        else:
            ids = None
        esp_gain, esp_state = esp([[sos] + y for y in ys], esp_state, ids)
        theirs = espnet_scores(esp_state, ids)

        if step == 0:  # our N = B hypotheses are ESPnet's N = B * W identical copies
            ours, scored = scorer.score(state, None if ids is None else ids[::W])
            ours = ours.repeat_interleave(W, dim=0)
        else:
            ours, scored = scorer.score(state, ids)
            # ESPnet returns the gain over psi(h); compare it where psi(h) is possible at all
            # (for an impossible h ESPnet's logzero arithmetic gives about 0, ours NaN).
            gain = esp_gain if ids is None else esp_gain.gather(1, ids)
            alive = torch.isfinite(state.prefix_score)
            assert alive.any()
            ours_gain = (ours - state.prefix_score[:, None])[alive]
            assert_same_scores(ours_gain, gain[alive].masked_fill(gain[alive] < -1e9, -math.inf))
        assert_same_scores(ours, theirs)

        # The slow reference, on the valid frames of each utterance.
        cand = ids if ids is not None else torch.arange(V).expand(N, V)
        for n in range(0, N, 5):
            xn = x[n // W, : lengths[n // W]].double().numpy()
            for k, c in enumerate(cand[n].tolist()):
                if c in (BLANK, eos):
                    continue
                ref = lattice_prefix_score(xn, ys[n], c)
                if math.isinf(ref):
                    assert ours[n, k] == -math.inf
                else:
                    assert ours[n, k].item() == pytest.approx(ref, abs=1e-4)

        # Random survivors: W per utterance, any source hypothesis, a scored real token.
        hyp, tok, best = [], [], []
        for b in range(B):
            for _ in range(W):
                src = b * W + int(rng.integers(W))
                options = [c for c in cand[src].tolist() if c not in (BLANK, eos)]
                c = int(rng.choice(options))
                hyp.append(b if step == 0 else src)
                tok.append(c)
                best.append((src - b * W) * V + c)
        ys = [ys[b * W + (best_id // V)] + [best_id % V] for b in range(B) for best_id in best[b * W : (b + 1) * W]]
        esp_state = esp.index_select_state(esp_state, torch.tensor(best).view(B, W))
        state = scorer.select(scored, torch.tensor(hyp), torch.tensor(tok))


def test_edges_one_frame_too_long_prefix_and_unscored_token():
    scorer = CTCPrefixScorer(blank=BLANK, eos=3)
    x = random_log_probs(1, 1, 4, seed=5)
    state = scorer.init_state(x, torch.tensor([1]))
    scores, scored = scorer.score(state)
    torch.testing.assert_close(scores[0, 1:3], x[0, 0, 1:3])  # a first token at the only frame
    assert scores[0, 3] == x[0, 0, BLANK]  # eos: the empty sequence
    state = scorer.select(scored, torch.tensor([0]), torch.tensor([1]))
    scores, scored = scorer.score(state)
    assert torch.isinf(scores[0, :3]).all()  # no frame left for a second token
    assert scores[0, 3] == x[0, 0, 1]

    # A token chosen outside a hypothesis' scored candidates has CTC probability zero.
    x = random_log_probs(2, 6, 5, seed=6)
    state = scorer.init_state(x, torch.tensor([6, 5]))
    _, scored = scorer.score(state, torch.tensor([[1, 2], [2, 4]]))
    state = scorer.select(scored, torch.tensor([0, 1, 1]), torch.tensor([2, 2, 1]))
    assert state.utt.tolist() == [0, 1, 1] and state.length == 1
    assert torch.isfinite(state.prefix_score[:2]).all() and state.prefix_score[2] == -math.inf
    assert torch.isinf(state.r[:, :, 2]).all()
