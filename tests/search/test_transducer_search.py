"""Transducer searches on small random models, against exhaustive enumeration:

- modified beam search with a beam wide enough to keep everything gives every token
  sequence reachable with one symbol per frame, each with the exact total probability of
  its paths (summed by brute force here);
- with beam 1 it is exactly greedy search (one symbol per frame), tokens, scores and
  timestamps;
- batched results equal one-utterance-at-a-time results (padding never leaks);
- greedy with several symbols per frame follows the frame-by-frame argmax written out here;
- Graves beam search scores never exceed the true log P(y|x) (forward algorithm) and its
  best hypothesis is at least as likely as greedy's."""
from __future__ import annotations

import itertools

import pytest
import torch

from models.test_transducer import forward_algorithm
from speechlm.decoders.transducer import Joiner, LSTMPredictor, StatelessPredictor
from speechlm.search.transducer_beam import graves_beam_search, modified_beam_search
from speechlm.search.transducer_greedy import transducer_greedy_search

V, D = 4, 6


def random_model(kind: str, seed: int = 0, blank_bias: float = 0.0):
    torch.manual_seed(seed)
    pred = LSTMPredictor(V, 5, 7, dropout_rate=0.0) if kind == "lstm" else StatelessPredictor(V, 7, 2, dropout_rate=0.0)
    joiner = Joiner(D, pred.output_size(), 8, V)
    with torch.no_grad():
        joiner.output.weight.mul_(3.0)  # peakier distributions, so that searches disagree
        joiner.output.bias[0] += blank_bias
    return pred.eval(), joiner.eval()


def path_logp(pred, joiner, enc, path) -> tuple[tuple[int, ...], float]:
    """One symbol (or blank) per frame: (tokens, log-probability of the path)."""
    ys, total = [], 0.0
    for t, v in enumerate(path):
        out = pred(torch.tensor([ys]))[0, -1] if ys else pred(torch.zeros(1, 0, dtype=torch.long))[0, 0]
        logp = torch.log_softmax(joiner(enc[t].view(1, 1, -1), out.view(1, 1, -1))[0, 0, 0].double(), -1)
        total += float(logp[v])
        if v != 0:
            ys.append(v)
    return tuple(ys), total


@pytest.mark.parametrize("kind", ["lstm", "stateless"])
def test_wide_modified_beam_equals_exhaustive_enumeration(kind):
    pred, joiner = random_model(kind)
    t_len = 3
    enc = torch.randn(1, t_len, D)
    exact: dict[tuple[int, ...], float] = {}
    with torch.no_grad():
        for path in itertools.product(range(V), repeat=t_len):
            ys, lp = path_logp(pred, joiner, enc[0], path)
            exact[ys] = lp if ys not in exact else float(torch.logaddexp(torch.tensor(exact[ys]), torch.tensor(lp)))
    hyps = modified_beam_search(pred, joiner, enc, torch.tensor([t_len]), beam_size=V ** t_len)[0]
    assert len(hyps) == len(exact) == sum((V - 1) ** n for n in range(t_len + 1))
    for h in hyps:
        assert h.score == pytest.approx(exact[tuple(h.tokens)], abs=1e-5)
        assert len(h.timestamps) == len(h.tokens) and h.timestamps == sorted(set(h.timestamps))
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


@pytest.mark.parametrize("kind", ["lstm", "stateless"])
def test_beam_one_is_greedy(kind):
    pred, joiner = random_model(kind, seed=3)
    enc, lens = torch.randn(4, 9, D), torch.tensor([9, 6, 1, 4])
    greedy = transducer_greedy_search(pred, joiner, enc, lens, max_symbols_per_frame=1)
    beam = modified_beam_search(pred, joiner, enc, lens, beam_size=1)
    assert any(g.tokens for g in greedy)
    for g, b in zip(greedy, beam):
        assert len(b) == 1
        assert b[0].tokens == g.tokens and b[0].timestamps == g.timestamps
        assert b[0].score == pytest.approx(g.score, abs=1e-9)


@pytest.mark.parametrize("kind", ["lstm", "stateless"])
@pytest.mark.parametrize("search", ["greedy", "modified_beam", "graves"])
def test_batched_equals_one_at_a_time(kind, search):
    pred, joiner = random_model(kind, seed=5)
    enc, lens = torch.randn(3, 8, D), torch.tensor([5, 8, 3])
    run = {"greedy": lambda e, l: [[h] for h in transducer_greedy_search(pred, joiner, e, l, max_symbols_per_frame=2)],
           "modified_beam": lambda e, l: modified_beam_search(pred, joiner, e, l, beam_size=3),
           "graves": lambda e, l: graves_beam_search(pred, joiner, e, l, beam_size=3)}[search]
    batched = run(enc, lens)
    for i in range(3):
        alone = run(enc[i : i + 1, : int(lens[i])], lens[i : i + 1])[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[i]], abs=1e-5)


def test_greedy_with_several_symbols_per_frame_follows_the_argmax():
    pred, joiner = random_model("lstm", seed=7, blank_bias=-1.0)
    enc = torch.randn(1, 6, D)
    got = transducer_greedy_search(pred, joiner, enc, torch.tensor([6]), max_symbols_per_frame=3)[0]
    ys, times, score = [], [], 0.0
    with torch.no_grad():
        for t in range(6):
            for _ in range(3):
                out = pred(torch.tensor([ys]))[0, -1] if ys else pred(torch.zeros(1, 0, dtype=torch.long))[0, 0]
                logp = torch.log_softmax(joiner(enc[0, t].view(1, 1, -1), out.view(1, 1, -1))[0, 0, 0], -1)
                v = int(logp.argmax())
                score += float(logp[v])
                if v == 0:
                    break
                ys.append(v)
                times.append(t)
    assert max(times.count(t) for t in set(times)) > 1  # the case under test happened
    assert got.tokens == ys and got.timestamps == times and got.score == pytest.approx(score, abs=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "stateless"])
def test_graves_scores_are_bounded_by_the_full_sum_and_beat_greedy(kind):
    pred, joiner = random_model(kind, seed=11)
    enc = torch.randn(2, 5, D)
    lens = torch.tensor([5, 4])
    graves = graves_beam_search(pred, joiner, enc, lens, beam_size=4)
    greedy = transducer_greedy_search(pred, joiner, enc, lens, max_symbols_per_frame=10)
    with torch.no_grad():
        for i, hyps in enumerate(graves):
            for h in hyps:
                out = pred(torch.tensor([h.tokens], dtype=torch.long).view(1, -1))  # (1, U+1, P)
                logp = torch.log_softmax(joiner(enc[i : i + 1, : int(lens[i])], out)[0].double(), -1)
                assert h.score <= -forward_algorithm(logp, h.tokens) + 1e-6
            assert hyps[0].score >= greedy[i].score - 1e-6
