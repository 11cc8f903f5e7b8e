"""Encoder behaviour beyond ESPnet parity (tests/interop): options of ours (RoPE),
intermediate layers, layer drop and stochastic depth, and that they can learn."""
from __future__ import annotations

import pytest
import torch

from speechlm.encoders.conformer import ConformerEncoder
from speechlm.encoders.e_branchformer import EBranchformerEncoder
from speechlm.encoders.transformer import TransformerEncoder

SMALL = dict(output_size=32, attention_heads=4, num_blocks=3)
FAMILIES = [
    (ConformerEncoder, dict(SMALL, linear_units=64, macaron_style=True, cnn_module_kernel=7)),
    (EBranchformerEncoder, dict(SMALL, cgmlp_linear_units=64, cgmlp_conv_kernel=7)),
    (TransformerEncoder, dict(SMALL, linear_units=64)),
]


def batch():
    torch.manual_seed(0)
    return torch.randn(3, 60, 20), torch.tensor([60, 45, 20])


@pytest.mark.parametrize("cls,kw", FAMILIES)
@pytest.mark.parametrize("rope", [False, True])
def test_shapes_lengths_and_intermediate(cls, kw, rope):
    enc = cls(20, use_rope=rope, **kw).eval()
    x, lens = batch()
    out = enc(x, lens, return_layers=[1, 2])
    assert out.output.shape == (3, 14, 32) and out.lengths.tolist() == [14, 12, 5]  # ESPnet mask arithmetic
    assert sorted(out.intermediate) == [1, 2]
    assert not torch.allclose(out.intermediate[2], out.output)
    assert torch.isfinite(out.output).all()


@pytest.mark.parametrize("cls,kw", FAMILIES)
def test_rope_changes_positions_not_parameters_of_blocks(cls, kw):
    base = cls(20, **kw)
    rope = cls(20, use_rope=True, **kw)
    # RoPE replaces relative-position parameters (linear_pos, pos biases) by rotations
    assert sum(p.numel() for p in rope.parameters()) <= sum(p.numel() for p in base.parameters())
    x, lens = batch()
    shifted = torch.cat([torch.zeros(3, 8, 20), x], 1)[:, :60]
    out = rope.eval()(x, lens).output
    assert not torch.allclose(out[:, :3], rope(shifted, lens).output[:, 2:5], atol=1e-3)


def test_layer_drop_and_stochastic_depth_only_in_training():
    x, lens = batch()
    enc = ConformerEncoder(20, layer_drop_rate=0.5, stochastic_depth_rate=0.3, **FAMILIES[0][1])
    enc.eval()
    assert torch.equal(enc(x, lens).output, enc(x, lens).output)
    enc.train()
    torch.manual_seed(3)
    outs = {tuple(enc(x, lens).output.flatten()[:5].tolist()) for _ in range(6)}
    assert len(outs) > 1


@pytest.mark.parametrize("cls,kw", FAMILIES)
def test_loss_falls_when_fitting_a_batch(cls, kw):
    """Regress a target from features: the encoder must be able to learn it."""
    torch.manual_seed(0)
    enc = cls(20, dropout_rate=0.0, positional_dropout_rate=0.0, **kw)
    head = torch.nn.Linear(32, 1)
    x, lens = batch()
    target = torch.randn(3, 14, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(40):
        out = enc(x, lens)
        loss = torch.nn.functional.mse_loss(head(out.output), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
