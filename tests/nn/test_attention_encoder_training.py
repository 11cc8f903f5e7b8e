"""The encoders' hot path in training mode against ESPnet's: with dropout off, the same
outputs, parameter gradients and BatchNorm running statistics after a forward + backward.

ESPnet parity elsewhere (tests/interop/test_espnet_encoders.py) is checked in eval mode; this
covers what only training runs: attention's backward (SDPA, or the unfused CPU path when the
relative-position bias needs a gradient), the depthwise convolutions run as channels-last 2-D
convolutions, and BatchNorm's batch statistics taken over (B*T, C) rows."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from espnet2.asr.encoder.conformer_encoder import ConformerEncoder as EspnetConformer
from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder as EspnetEBranchformer

from speechlm.encoders.conformer import ConformerEncoder
from speechlm.encoders.e_branchformer import EBranchformerEncoder
from speechlm.interop.espnet import espnet_encoder_state_dict_to_ours
from speechlm.nn.convolution import depthwise_conv_over_time

NO_DROPOUT = dict(dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0)
SMALL = dict(output_size=64, attention_heads=4, num_blocks=2, **NO_DROPOUT)
CASES = {
    "conformer": (EspnetConformer, ConformerEncoder,
                  dict(SMALL, linear_units=128, macaron_style=True, rel_pos_type="latest", cnn_module_kernel=15)),
    "conformer_plain_attention": (EspnetConformer, ConformerEncoder,
                                  dict(SMALL, linear_units=128, pos_enc_layer_type="abs_pos",
                                       selfattention_layer_type="selfattn")),
    "e_branchformer": (EspnetEBranchformer, EBranchformerEncoder,
                       dict(SMALL, cgmlp_linear_units=128, cgmlp_conv_kernel=31, use_ffn=True, macaron_ffn=True,
                            linear_units=128, merge_conv_kernel=31)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_training_step_matches_espnet(case):
    espnet_cls, our_cls, conf = CASES[case]
    torch.manual_seed(0)
    ref = espnet_cls(80, **conf).train()
    ours = our_cls(input_size=80, **conf).train()
    ours.load_state_dict(espnet_encoder_state_dict_to_ours(ref.state_dict()), strict=True)
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([90, 61, 40])
    xs = torch.randn(3, 90, 80, generator=g).masked_fill((torch.arange(90) >= lengths[:, None])[..., None], 0.0)
    outs = []
    for model in (ref, ours):
        out = model(xs, lengths)
        y, olens = (out[0], out[1]) if isinstance(out, tuple) and not hasattr(out, "output") else (out.output, out.lengths)
        valid = (torch.arange(y.shape[1]) < olens[:, None])[..., None]
        (y * valid).square().sum().backward()
        outs.append(y.detach())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    ref_grads = espnet_encoder_state_dict_to_ours({n: p.grad for n, p in ref.named_parameters()})
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    assert set(ours_grads) == set(ref_grads)
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=2e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    ref_buffers = dict(ref.named_buffers())
    for name, buf in ours.named_buffers():
        if name in ref_buffers:  # BatchNorm running statistics, updated from the batch
            torch.testing.assert_close(buf, ref_buffers[name], atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")


# the first four take the CPU path with its own backward (stride 1, dilation 1, padding <= K-1)
@pytest.mark.parametrize("stride,dilation,kernel,padding", [
    (1, 1, 31, 15), (1, 1, 3, 1), (1, 1, 5, 0), (1, 1, 5, 4), (2, 1, 5, 2), (1, 2, 7, 6), (1, 1, 3, 3)])
def test_depthwise_conv_over_time_equals_conv1d(stride, dilation, kernel, padding):
    torch.manual_seed(0)
    conv = nn.Conv1d(24, 24, kernel, stride, padding, dilation, groups=24)
    x = torch.randn(3, 40, 24, requires_grad=True)
    ours = depthwise_conv_over_time(x, conv)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(ours, [x, conv.weight, conv.bias], g)
    want = torch.autograd.grad(ref, [x, conv.weight, conv.bias], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["conformer", "e_branchformer"])
def test_bf16_training_step_on_cpu(case):
    """bf16-mixed (the GPU presets' precision) and pure bf16 weights run here on the CPU: a
    training step with finite gradients, outputs near fp32's."""
    _, our_cls, conf = CASES[case]
    torch.manual_seed(0)
    model = our_cls(input_size=80, **{**conf, "dropout_rate": 0.1, "attention_dropout_rate": 0.1}).train()
    xs, lengths = torch.randn(2, 60, 80), torch.tensor([60, 45])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(xs, lengths).output
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        fp32 = model(xs, lengths).output
        model.to(torch.bfloat16)
        bf16 = model(xs.bfloat16(), lengths).output
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - fp32).abs().mean() < 0.05 * fp32.abs().mean()
    model.train()
    model(xs.bfloat16(), lengths).output.float().square().mean().backward()
