"""Transducer prediction networks: the step-by-step interface searches use gives exactly
what the whole-sequence forward used in training gives, and padding never leaks."""
from __future__ import annotations

import pytest
import torch

from speechlm.decoders.transducer import Joiner, LSTMPredictor, StatelessPredictor

V = 9


def predictors():
    torch.manual_seed(0)
    return [LSTMPredictor(V, 12, 16, num_layers=2, dropout_rate=0.0), StatelessPredictor(V, 12, context_size=3,
                                                                                        dropout_rate=0.0)]


@pytest.mark.parametrize("predictor", predictors(), ids=["lstm", "stateless"])
def test_steps_equal_the_sequence_forward(predictor):
    predictor.eval()
    tokens = torch.tensor([[3, 1, 4, 1, 5], [2, 7, -1, -1, -1]])
    lengths = torch.tensor([5, 2])
    whole = predictor(tokens, lengths)  # (2, 6, P)
    assert whole.shape == (2, 6, predictor.output_size())
    state = predictor.init_state(2)
    out, state = predictor.step(torch.zeros(2, dtype=torch.long), state)  # blank = start
    torch.testing.assert_close(out, whole[:, 0])
    for u in range(2):  # the real tokens of both rows
        out, state = predictor.step(tokens[:, u], state)
        torch.testing.assert_close(out, whole[:, u + 1])
    for u in range(2, 5):
        out, state = predictor.step(tokens[:1, u], predictor.select_state(state, torch.tensor([0])))
        torch.testing.assert_close(out, whole[:1, u + 1])


@pytest.mark.parametrize("predictor", predictors(), ids=["lstm", "stateless"])
def test_padding_does_not_change_real_outputs(predictor):
    predictor.eval()
    short = predictor(torch.tensor([[2, 7]]), torch.tensor([2]))
    padded = predictor(torch.tensor([[2, 7, 5, 5]]), torch.tensor([2]))
    torch.testing.assert_close(padded[:, :3], short)


def test_stateless_context_is_its_last_tokens():
    p = StatelessPredictor(V, 8, context_size=2, dropout_rate=0.0).eval()
    a = p(torch.tensor([[4, 4, 6, 3]]))[0, -1]
    b = p(torch.tensor([[1, 2, 6, 3]]))[0, -1]
    c = p(torch.tensor([[1, 2, 3, 6]]))[0, -1]
    torch.testing.assert_close(a, b)  # only the last two tokens matter
    assert not torch.allclose(b, c)


def test_joiner_broadcasts_projected_inputs():
    j = Joiner(10, 6, 8, V)
    enc, pred = torch.randn(2, 5, 10), torch.randn(2, 3, 6)
    full = j(enc, pred)
    assert full.shape == (2, 5, 3, V)
    torch.testing.assert_close(full[1, 4, 2], j.joint(j.project_encoder(enc[1, 4]), j.project_predictor(pred[1, 2])))
