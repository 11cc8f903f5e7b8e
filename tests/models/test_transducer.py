"""TransducerModel: torchaudio's RNN-T loss as the model computes it (projections, padding,
grouped lattices) equals a brute-force forward algorithm written out here; the grouped,
checkpointed lattice gives the same loss and gradients as the whole batch at once; the
auxiliary CTC adds what it says; training on a toy task drives the loss down."""
from __future__ import annotations

import math

import pytest
import torch

from speechlm.decoders.transducer import Joiner, LSTMPredictor, StatelessPredictor
from speechlm.encoders.conformer import ConformerEncoder
from speechlm.models.transducer import TransducerModel, lattice_groups
from speechlm.search.transducer_greedy import transducer_greedy_search

V, F, D = 6, 10, 16


def tiny_model(predictor="lstm", ctc_weight=0.0, seed=0):
    torch.manual_seed(seed)
    enc = ConformerEncoder(input_size=F, output_size=D, attention_heads=2, linear_units=32, num_blocks=1,
                           input_layer="linear", cnn_module_kernel=3, dropout_rate=0.0,
                           positional_dropout_rate=0.0, attention_dropout_rate=0.0)
    pred = (LSTMPredictor(V, 8, 12, dropout_rate=0.0) if predictor == "lstm"
            else StatelessPredictor(V, 12, context_size=2, dropout_rate=0.0))
    return TransducerModel(V, enc, pred, Joiner(D, pred.output_size(), 10, V), ctc_weight=ctc_weight).eval()


def batch():
    g = torch.Generator().manual_seed(1)
    return {"audio": torch.randn(3, 7, F, generator=g), "audio_lens": torch.tensor([7, 5, 3]),
            "tokens": torch.tensor([[1, 2, 3], [4, 4, -1], [5, -1, -1]]), "token_lens": torch.tensor([3, 2, 1])}


def forward_algorithm(logp: torch.Tensor, targets: list[int], blank: int = 0) -> float:
    """-log P(y|x) over the (T, U+1) lattice: logp (T, U+1, V) log-probabilities."""
    t_len, u_len = logp.shape[0], len(targets) + 1
    alpha = [[-math.inf] * u_len for _ in range(t_len)]
    for t in range(t_len):
        for u in range(u_len):
            if t == 0 and u == 0:
                alpha[t][u] = 0.0
                continue
            paths = []
            if t > 0:
                paths.append(alpha[t - 1][u] + float(logp[t - 1, u, blank]))
            if u > 0:
                paths.append(alpha[t][u - 1] + float(logp[t, u - 1, targets[u - 1]]))
            alpha[t][u] = torch.logsumexp(torch.tensor(paths, dtype=torch.float64), 0).item()
    return -(alpha[t_len - 1][u_len - 1] + float(logp[t_len - 1, u_len - 1, blank]))


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
def test_loss_matches_a_brute_force_forward_algorithm(predictor):
    model, b = tiny_model(predictor), batch()
    out = model(b)
    with torch.no_grad():
        expected = brute_force_loss(model, b)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["loss_transducer"].item() == pytest.approx(expected, rel=1e-5)


def brute_force_loss(model, b) -> float:
    """Batch mean of the forward algorithm's -log P(y|x), utterance by utterance."""
    enc, enc_lens, _ = model.encode(b["audio"], b["audio_lens"])
    expected = 0.0
    for i in range(3):
        t, u = int(enc_lens[i]), int(b["token_lens"][i])
        targets = b["tokens"][i, :u]
        pred = model.predictor(targets.unsqueeze(0))  # (1, U+1, P)
        logp = torch.log_softmax(model.joiner(enc[i : i + 1, :t], pred)[0].double(), dim=-1)
        expected += forward_algorithm(logp, targets.tolist())
    return expected / len(enc_lens)


def test_grouped_lattices_give_the_same_loss_and_gradients():
    model, b = tiny_model(), batch()
    whole = model(b)["loss"]
    whole.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.max_joint_elements = 1  # one utterance per group
    assert len(lattice_groups([7, 5, 3], [3, 2, 1], V, 1)) == 3
    grouped = model(b)["loss"]
    grouped.backward()
    assert grouped.item() == pytest.approx(whole.item(), rel=1e-6)
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-6, msg=n)


def test_lattice_groups_respect_the_budget():
    enc_lens, token_lens = [50, 10, 40, 30, 20], [5, 1, 4, 3, 2]
    groups = lattice_groups(enc_lens, token_lens, 10, 50 * 6 * 10 * 2)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    for g in groups:
        n, t, u = len(g), max(enc_lens[i] for i in g), max(token_lens[i] + 1 for i in g)
        assert n == 1 or n * t * u * 10 <= 50 * 6 * 10 * 2
    assert groups[0][:2] == [0, 2]  # longest first


def test_auxiliary_ctc_adds_its_weighted_loss():
    b = batch()
    plain, with_ctc = tiny_model(), tiny_model(ctc_weight=0.5)
    out = with_ctc(b)
    assert out["loss"].item() == pytest.approx(out["loss_transducer"].item() + 0.5 * out["loss_ctc"].item(), rel=1e-6)
    assert out["loss_transducer"].item() == pytest.approx(plain(b)["loss"].item(), rel=1e-6)  # same seed
    assert "loss_ctc" not in plain(b)


def test_training_drives_the_loss_down_and_greedy_recovers_the_targets():
    model, b = tiny_model(), batch()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = model(b)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    model.eval()
    enc, enc_lens, _ = model.encode(b["audio"], b["audio_lens"])
    hyps = transducer_greedy_search(model.predictor, model.joiner, enc, enc_lens)
    assert [h.tokens for h in hyps] == [[1, 2, 3], [4, 4], [5]]
