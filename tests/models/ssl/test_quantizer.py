"""GumbelVectorQuantizer (straight-through, temperature schedule, diversity loss, parity with
transformers' Wav2Vec2GumbelVectorQuantizer) and BEST-RQ's RandomProjectionQuantizer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from speechlm.models.ssl.quantizer import (
    GumbelVectorQuantizer, RandomProjectionQuantizer, diversity_loss, stack_frames,
)

G, V, D_IN, CODE = 2, 8, 16, 12


def gumbel(**kw) -> GumbelVectorQuantizer:
    torch.manual_seed(0)
    return GumbelVectorQuantizer(D_IN, num_groups=G, num_vars=V, code_dim=CODE, **kw)


def test_straight_through_outputs_codebook_entries_and_passes_gradients():
    q = gumbel().train()
    x = torch.randn(64, D_IN)
    out = q(x)
    assert out.quantized.shape == (64, CODE) and out.codes.shape == (64, G) and out.codes.dtype == torch.long
    entries = q.codevectors[0].view(G, V, CODE // G)
    expected = torch.cat([entries[g, out.codes[:, g]] for g in range(G)], dim=-1)
    assert torch.equal(out.quantized, expected)  # exact: the forward value is one-hot
    (out.quantized * torch.randn_like(out.quantized)).sum().backward()
    assert q.weight_proj.weight.grad.abs().sum() > 0  # through the soft sample
    assert q.codevectors.grad.abs().sum() > 0
    assert out.num_vars_total == G * V


def test_leading_dims_are_kept():
    out = gumbel().eval()(torch.randn(3, 5, D_IN))
    assert out.quantized.shape == (3, 5, CODE) and out.codes.shape == (3, 5, G)


def test_temperature_schedule_and_resume():
    q = gumbel(temperature=(2.0, 0.5, 0.9)).train()
    x = torch.randn(10, D_IN)
    used = [q(x).temperature for _ in range(20)]
    assert used == pytest.approx([max(2.0 * 0.9 ** n, 0.5) for n in range(20)])
    assert int(q.num_updates) == 20 and q.temperature == pytest.approx(0.5)
    q.eval()
    q(x)
    assert int(q.num_updates) == 20  # eval forwards don't count

    q = gumbel(temperature=(2.0, 0.5, 0.99)).train()
    for _ in range(7):
        q(x)
    resumed = gumbel(temperature=(2.0, 0.5, 0.99))
    resumed.load_state_dict(q.state_dict())
    assert int(resumed.num_updates) == 7 and resumed.temperature == pytest.approx(2.0 * 0.99 ** 7)


def test_eval_is_deterministic_argmax():
    q = gumbel().eval()
    x = torch.randn(50, D_IN)
    a, b = q(x), q(x)
    assert torch.equal(a.quantized, b.quantized) and torch.equal(a.codes, b.codes)
    assert torch.equal(a.codes, q.weight_proj(x).view(50, G, V).argmax(-1))
    assert a.temperature == 2.0


def test_diversity_loss_uniform_and_collapsed():
    q = gumbel().train()
    with torch.no_grad():  # every logit equal: the soft distribution is uniform
        q.weight_proj.weight.zero_()
        q.weight_proj.bias.zero_()
    out = q(torch.randn(32, D_IN))
    # fairseq's +1e-7 in the log: perplexity V / (1 + V e-7) per group, not exactly V.
    assert diversity_loss(out).item() == pytest.approx(0.0, abs=1e-5)

    # Uniform use by distinct, confident frames: frame i picks code i of every group.
    q = GumbelVectorQuantizer(V, num_groups=G, num_vars=V, code_dim=CODE).eval()
    with torch.no_grad():
        q.weight_proj.weight.copy_(20 * torch.eye(V).repeat(G, 1))
        q.weight_proj.bias.zero_()
    out = q(torch.eye(V))
    assert diversity_loss(out).item() == pytest.approx(0.0, abs=1e-5)
    assert float(out.code_perplexity) == pytest.approx(G * V, rel=1e-4)

    q = gumbel().train()
    with torch.no_grad():  # every frame, every group: code 0
        q.weight_proj.weight.zero_()
        q.weight_proj.bias.copy_(torch.tensor([50.0] + [0.0] * (V - 1)).repeat(G))
    out = q(torch.randn(32, D_IN))
    assert diversity_loss(out).item() == pytest.approx(1 - 1 / V, abs=1e-4)
    assert float(out.code_perplexity) == pytest.approx(G, abs=1e-4)


def test_diversity_loss_raises_codebook_usage():
    torch.manual_seed(0)
    q = GumbelVectorQuantizer(32, num_groups=2, num_vars=32, code_dim=16).train()
    x = 0.3 * torch.randn(256, 32) + torch.randn(32)  # alike frames: few codes in use
    opt = torch.optim.Adam(q.parameters(), lr=0.05)
    first = q(x)
    for _ in range(40):
        loss = diversity_loss(q(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = q(x)
    assert first.prob_perplexity.item() < 16 and last.prob_perplexity.item() > 0.8 * 64
    assert last.code_perplexity.item() > 4 * first.code_perplexity.item()


def test_matches_transformers_quantizer():
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

    config = Wav2Vec2Config(num_codevector_groups=G, num_codevectors_per_group=V, codevector_dim=CODE,
                            conv_dim=(D_IN,), conv_stride=(1,), conv_kernel=(1,))
    theirs = Wav2Vec2GumbelVectorQuantizer(config)
    ours = gumbel()
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if k != "num_updates"})
    x = torch.randn(4, 25, D_IN)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        out = ours(x)
        quantized, perplexity = theirs(x)
    assert torch.allclose(out.quantized, quantized, atol=1e-6)
    assert float(out.code_perplexity) == pytest.approx(float(perplexity), rel=1e-4)  # hard-code usage
    ours.train(), theirs.train()
    with torch.no_grad():
        _, perplexity = theirs(x)
        out = ours(x)
    assert float(out.prob_perplexity) == pytest.approx(float(perplexity), rel=1e-4)  # soft usage


def test_random_projection_is_frozen_and_seeded():
    q = RandomProjectionQuantizer(20, code_dim=16, codebook_size=64, seed=3)
    assert list(q.parameters()) == []
    assert set(q.state_dict()) == {"projection", "codebooks"}
    assert not any(b.requires_grad for b in q.buffers())
    assert torch.allclose(q.codebooks.norm(dim=-1), torch.ones(1, 64))

    same, other = RandomProjectionQuantizer(20, 16, 64, seed=3), RandomProjectionQuantizer(20, 16, 64, seed=4)
    x = torch.randn(2, 30, 20)
    assert torch.equal(q(x), same(x)) and not torch.equal(q(x), other(x))
    other.load_state_dict(q.state_dict())  # the checkpoint carries the targets
    assert torch.equal(q(x), other(x))

    model = nn.ModuleDict({"head": nn.Linear(20, 64), "targets": q})
    before = {k: v.clone() for k, v in q.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    codes = model["targets"](x)[..., 0]
    loss = nn.functional.cross_entropy(model["head"](x).transpose(1, 2), codes)
    loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())


def test_random_projection_codes_are_nearest_neighbours_and_spread():
    q = RandomProjectionQuantizer(80, code_dim=16, codebook_size=512, num_codebooks=2, seed=0)
    x = torch.randn(4, 5000, 80)
    codes = q(x, chunk_frames=3000)
    assert codes.shape == (4, 5000, 2) and codes.dtype == torch.long
    for c in range(2):
        assert codes[..., c].unique().numel() > 256  # over half of the codebook in use

        z = nn.functional.normalize(x.reshape(-1, 80).double() @ q.projection[c].double(), dim=-1)
        dist = torch.cdist(z, q.codebooks[c].double())  # (frames, 512) L2 distances
        picked = dist.gather(1, codes[..., c].reshape(-1, 1)).squeeze(1)
        assert torch.allclose(picked, dist.min(dim=1).values, atol=1e-5)
        assert (codes[..., c].reshape(-1) == dist.argmin(dim=1)).float().mean() > 0.999
    assert (codes[..., 0] != codes[..., 1]).float().mean() > 0.9  # independent projections


def test_stack_frames():
    feats = torch.arange(2 * 11 * 3, dtype=torch.float).view(2, 11, 3)
    stacked, lengths = stack_frames(feats, torch.tensor([11, 7]), 4)
    assert stacked.shape == (2, 2, 12) and lengths.tolist() == [2, 1]
    assert torch.equal(stacked[1, 1], torch.cat([feats[1, 4], feats[1, 5], feats[1, 6], feats[1, 7]]))
