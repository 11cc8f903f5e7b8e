"""Building blocks against their references: dropout statistics, the strided relative
shift vs ESPnet's pad-and-reshape, RoPE's relative-position property, masks, norms."""
from __future__ import annotations

import pytest
import torch

from speechlm.nn.attention import rel_shift
from speechlm.nn.dropout import Dropout
from speechlm.nn.masks import chunk_mask, valid_mask
from speechlm.nn.norm import RMSNorm
from speechlm.nn.positional import RotaryEmbedding


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_rate_scale_and_eval_identity(p):
    torch.manual_seed(0)
    drop = Dropout(p).train()
    x = torch.ones(400, 1000)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.003
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)  # expectation preserved
    assert torch.equal(drop.eval()(x), x)
    # a fresh mask each call, and rows/columns are not correlated
    assert not torch.equal(drop.train()(x) != 0, kept)
    assert kept.float().mean(0).std() < 0.03 and kept.float().mean(1).std() < 0.03


def test_dropout_gradient_flows_through_kept_elements():
    torch.manual_seed(1)
    x = torch.randn(50, 60, requires_grad=True)
    y = Dropout(0.2).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad != 0, y != 0)


def espnet_rel_shift(x):
    """ESPnet's RelPositionMultiHeadedAttention.rel_shift (pad, view, slice)."""
    zero_pad = torch.zeros((*x.size()[:3], 1), dtype=x.dtype)
    x_padded = torch.cat([zero_pad, x], dim=-1).view(*x.size()[:2], x.size(3) + 1, x.size(2))
    return x_padded[:, :, 1:].view_as(x)[:, :, :, : x.size(-1) // 2 + 1]


@pytest.mark.parametrize("t", [1, 2, 7, 50])
def test_rel_shift_matches_espnet_and_backprops(t):
    bd = torch.randn(2, 3, t, 2 * t - 1, requires_grad=True)
    ours = rel_shift(bd)
    assert torch.equal(ours, espnet_rel_shift(bd))
    g = torch.randn_like(ours)
    (ours * g).sum().backward()
    ours_grad = bd.grad.clone()
    bd.grad = None
    (espnet_rel_shift(bd) * g).sum().backward()
    assert torch.equal(ours_grad, bd.grad)


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(16)
    q = torch.randn(1, 1, 1, 16).expand(1, 1, 20, 16)
    k = torch.randn(1, 1, 1, 16).expand(1, 1, 20, 16)
    rq, rk = rope(q, k)
    scores = rq[0, 0] @ rk[0, 0].T
    for offset in (0, 3, -5):
        diag = torch.diagonal(scores, offset)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=1e-4, atol=1e-4)


def test_masks():
    assert valid_mask(torch.tensor([2, 0, 3])).tolist() == [[True, True, False], [False] * 3, [True] * 3]
    m = chunk_mask(6, 2, left_chunks=1)
    assert m[0].tolist() == [True, True, False, False, False, False]
    assert m[5].tolist() == [False, False, True, True, True, True]


def test_rmsnorm_matches_formula():
    x = torch.randn(4, 7, 32)
    n = RMSNorm(32)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(n(x), ref)
