"""The CTC head, label smoothing and decoder input/target construction against ESPnet's."""
from __future__ import annotations

import pytest
import torch

from espnet.nets.pytorch_backend.transformer.add_sos_eos import add_sos_eos as espnet_add_sos_eos
from espnet.nets.pytorch_backend.transformer.label_smoothing_loss import LabelSmoothingLoss as EspnetLSM
from espnet2.asr.ctc import CTC as EspnetCTC

from speechlm.models.ctc import CTC
from speechlm.models.ctc_attention import add_sos_eos
from speechlm.models.label_smoothing import LabelSmoothingLoss

V = 13


def padded_targets(seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([5, 2, 7, 1])
    ys = torch.randint(1, V - 1, (4, 7), generator=g)
    return ys.masked_fill(torch.arange(7)[None] >= lens[:, None], -1), lens


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("normalize_length", [False, True])
def test_label_smoothing_matches_espnet(smoothing, normalize_length):
    ys, _ = padded_targets()
    x = torch.randn(4, 7, V, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ref = EspnetLSM(V, -1, smoothing, normalize_length)(x, ys)
    got = LabelSmoothingLoss(V, -1, smoothing, normalize_length)(x, ys)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    (g_ref,) = torch.autograd.grad(ref, x)
    (g_got,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(g_got, g_ref, atol=1e-6, rtol=1e-5)


def test_ctc_matches_espnet():
    torch.manual_seed(0)
    ref = EspnetCTC(V, 16).eval()
    ours = CTC(V, 16).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    hs = torch.randn(4, 20, 16, requires_grad=True)
    hlens = torch.tensor([20, 9, 17, 3])
    ys, ys_lens = padded_targets()
    # utterance 3: 1 token in 3 frames is fine; make utterance 1 impossible (2 tokens, 1 frame)
    hlens[1] = 1
    expected = ref(hs, hlens, ys, ys_lens)
    got = ours(hs, hlens, ys, ys_lens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got)  # zero_infinity
    torch.testing.assert_close(torch.autograd.grad(got, hs)[0], torch.autograd.grad(expected, hs)[0],
                               atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.log_softmax(hs), ref.log_softmax(hs))
    assert torch.equal(ours.argmax(hs), ref.argmax(hs))


def test_add_sos_eos_matches_espnet():
    ys, lens = padded_targets()
    sos = eos = V - 1
    ref_in, ref_out = espnet_add_sos_eos(ys, sos, eos, -1)
    ys_in, ys_out = add_sos_eos(ys, lens, sos, eos, -1)
    assert torch.equal(ys_in, ref_in) and torch.equal(ys_out, ref_out)
