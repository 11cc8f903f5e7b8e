"""Attention through torch's scaled_dot_product_attention (SDPA) against the explicit formula
and against ESPnet's modules: padding masks including fully padded rows (ESPnet gives them
zero weights, so the output is linear_out's bias), gradients in training, dropout, bf16."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from espnet.nets.pytorch_backend.transformer.attention import (
    LegacyRelPositionMultiHeadedAttention as EspnetLegacyRelPositionMHA,
    MultiHeadedAttention as EspnetMHA,
    RelPositionMultiHeadedAttention as EspnetRelPositionMHA,
)
from espnet.nets.pytorch_backend.transformer.embedding import LegacyRelPositionalEncoding as EspnetLegacyRelPos
from espnet.nets.pytorch_backend.transformer.embedding import RelPositionalEncoding as EspnetRelPos

from speechlm.nn.attention import (
    LegacyRelPositionMultiHeadAttention,
    MultiHeadAttention,
    RelPositionMultiHeadAttention,
    attention,
)
from speechlm.nn.masks import valid_mask

B, T, D, H = 3, 11, 32, 4
TOL = dict(atol=2e-6, rtol=1e-5)


def explicit(q, k, v, mask, bias):
    """softmax((q k^T + bias) / sqrt(d)) v with masked keys at -inf; a row with no key -> 0."""
    scores = q @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    scores = scores / math.sqrt(q.shape[-1])
    if mask is not None:
        m = mask.unsqueeze(1)
        scores = scores.masked_fill(~m, float("-inf"))
        weights = torch.softmax(scores, -1).nan_to_num(0.0)  # all -inf rows: NaN -> 0
    else:
        weights = torch.softmax(scores, -1)
    return weights @ v


def masks() -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(3)
    square = torch.rand(B, T, T, generator=g) > 0.5
    square[0, 2] = False  # fully masked query rows
    square[2, 7] = False
    return {
        "none": None,
        "padding": valid_mask(torch.tensor([T, 6, 2]), T).unsqueeze(1),  # (B, 1, T)
        "padding_empty_utterance": valid_mask(torch.tensor([T, 0, 5]), T).unsqueeze(1),
        "square_with_empty_rows": square,  # (B, T, T)
    }


@pytest.mark.parametrize("with_grad", [False, True])  # with a bias that needs a gradient, the
@pytest.mark.parametrize("with_bias", [False, True])  # CPU takes the unfused path, else SDPA's
@pytest.mark.parametrize("mask_name", list(masks()))
def test_attention_equals_explicit_softmax(mask_name, with_bias, with_grad):
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, 8, requires_grad=with_grad) for _ in range(3))
    bias = torch.randn(B, H, T, T, requires_grad=with_grad) if with_bias else None
    mask = masks()[mask_name]
    ours = attention(q, k, v, mask, bias)
    assert torch.isfinite(ours).all()
    ref = explicit(q, k, v, mask, bias)
    torch.testing.assert_close(ours, ref, **TOL)
    if with_grad:
        inputs = [q, k, v] + ([bias] if with_bias else [])
        g = torch.randn_like(ref)
        ours_grads = torch.autograd.grad(ours, inputs, g)
        ref_grads = torch.autograd.grad(ref, inputs, g)
        for name, a, b in zip("qkvb", ours_grads, ref_grads):
            assert torch.isfinite(a).all(), name
            torch.testing.assert_close(a, b.nan_to_num(0.0), **TOL, msg=lambda m: f"d/d{name}: {m}")
        ours = ours.detach()
    if mask is not None and not mask.any(-1).all():
        empty = ~mask.any(-1)  # (B, 1 or T): rows with no key are exactly zero
        assert ours.permute(0, 2, 1, 3)[empty.expand(B, T) if empty.shape[1] == 1 else empty].abs().max() == 0


def copy_from_espnet(ours: nn.Module, ref: nn.Module) -> None:
    state = dict(ref.state_dict())
    state["qkv.weight"] = torch.cat([state.pop(f"linear_{n}.weight") for n in "qkv"])
    state["qkv.bias"] = torch.cat([state.pop(f"linear_{n}.bias") for n in "qkv"])
    ours.load_state_dict(state, strict=True)


def pair(kind: str, dropout: float = 0.0, zero_triu: bool = False):
    """(ESPnet's module, ours with its weights, positional embeddings (1, 2T-1 or T, D))."""
    torch.manual_seed(1)
    x = torch.zeros(1, T, D)
    if kind == "rel":
        ref, ours = EspnetRelPositionMHA(H, D, dropout, zero_triu), RelPositionMultiHeadAttention(H, D, dropout, zero_triu)
        pos = EspnetRelPos(D, 0.0)(x)[1]
    elif kind == "legacy_rel":
        ref, ours = EspnetLegacyRelPositionMHA(H, D, dropout), LegacyRelPositionMultiHeadAttention(H, D, dropout)
        pos = EspnetLegacyRelPos(D, 0.0)(x)[1]
    else:
        ref, ours, pos = EspnetMHA(H, D, dropout), MultiHeadAttention(H, D, dropout), None
    copy_from_espnet(ours, ref)
    return ref, ours, pos


def call(module, x, pos, mask):
    if isinstance(module, (MultiHeadAttention,)):
        return module(x, pos, mask)
    return module(x, x, x, mask) if pos is None else module(x, x, x, pos, mask)


CASES = [("plain", False), ("rel", False), ("rel", True), ("legacy_rel", False)]


@pytest.mark.parametrize("mask_name", [m for m in masks() if m != "none"])
@pytest.mark.parametrize("kind,zero_triu", CASES)
def test_module_matches_espnet_in_eval(kind, zero_triu, mask_name):
    ref, ours, pos = pair(kind, dropout=0.3, zero_triu=zero_triu)
    ref.eval(), ours.eval()
    x = torch.randn(B, T, D)
    mask = masks()[mask_name]
    with torch.no_grad():
        expected, got = call(ref, x, pos, mask), call(ours, x, pos, mask)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("kind,zero_triu", CASES)
def test_gradients_match_espnet_in_training(kind, zero_triu):
    """Training mode, no dropout: the same input and parameter gradients as ESPnet's, finite
    although an utterance has no frames."""
    ref, ours, pos = pair(kind, zero_triu=zero_triu)
    ref.train(), ours.train()
    mask = masks()["padding_empty_utterance"]
    x = torch.randn(B, T, D)
    target = torch.randn(B, T, D)
    grads = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        ((call(module, xi, pos, mask) - target) ** 2 * mask.transpose(1, 2)).sum().backward()
        g = {n: p.grad for n, p in module.named_parameters()}
        grads.append((xi.grad, g))
    (ref_x, ref_g), (our_x, our_g) = grads
    torch.testing.assert_close(our_x, ref_x, atol=1e-5, rtol=1e-5)
    ref_g["qkv.weight"] = torch.cat([ref_g.pop(f"linear_{n}.weight") for n in "qkv"])
    ref_g["qkv.bias"] = torch.cat([ref_g.pop(f"linear_{n}.bias") for n in "qkv"])
    assert set(our_g) == set(ref_g)
    for name, g in our_g.items():
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, ref_g[name], atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("kind", ["plain", "rel"])
def test_attention_dropout_acts_in_training_only(kind):
    _, ours, pos = pair(kind, dropout=0.5)
    x = torch.randn(B, T, D)
    mask = masks()["padding"]
    ours.eval()
    with torch.no_grad():
        clean = call(ours, x, pos, mask)
        ours.train()
        torch.manual_seed(5)
        a = call(ours, x, pos, mask)
        b = call(ours, x, pos, mask)
    assert not torch.allclose(a, clean, atol=1e-3) and not torch.allclose(a, b, atol=1e-3)
    # expectation preserved: averaged over many draws, training output approaches eval's
    ours.train()
    with torch.no_grad():
        mean = torch.stack([call(ours, x, pos, mask) for _ in range(400)]).mean(0)
    assert (mean - clean).abs().mean() < 0.1 * clean.abs().mean()


@pytest.mark.parametrize("kind", ["plain", "rel"])
def test_bf16_on_cpu_runs_and_is_close_to_fp32(kind):
    _, ours, pos = pair(kind, dropout=0.1)
    x = torch.randn(B, T, D)
    mask = masks()["padding_empty_utterance"]
    ours.eval()
    with torch.no_grad():
        fp32 = call(ours, x, pos, mask)
    # bf16-mixed (what the GPU presets use), here on the CPU, training: forward + backward
    ours.train()
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call(ours, xi, pos, mask)
    out.float().square().mean().backward()
    assert torch.isfinite(xi.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters())
    # pure bf16 weights and input, eval: within bf16 rounding of fp32
    ours_bf16 = ours.to(torch.bfloat16).eval()
    with torch.no_grad():
        got = call(ours_bf16, x.bfloat16(), None if pos is None else pos.bfloat16(), mask)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), fp32, atol=0.05, rtol=0.05)
