"""`python -m speechlm.bin.model_info`: Hydra composition, the parameter total, counted FLOPs."""
from __future__ import annotations

import re

import pytest
import torch

from speechlm.bin import model_info
from speechlm.bin.model_info import build_model, compose_config, forward_flops, num_params

TINY = ["encoder.output_size=64", "encoder.linear_units=128", "encoder.num_blocks=2"]


def run(capsys, *overrides: str) -> str:
    assert model_info.main(list(overrides)) == 0
    return capsys.readouterr().out


def test_printed_total_is_the_sum_of_parameters(capsys):
    out = run(capsys, "encoder=e_branchformer", *TINY, "encoder.cgmlp_linear_units=128")
    total = int(re.search(r"^total params: (\d+)$", out, re.M).group(1))
    model = build_model(compose_config(["encoder=e_branchformer", *TINY, "encoder.cgmlp_linear_units=128"]))
    assert total == sum(p.numel() for p in model.parameters())
    assert re.search(r"^embed\s+[\d,]+\s+[\d.]+%$", out, re.M)  # the per-module table
    assert re.search(r"^  encoders\.1\s", out, re.M)
    gflops = float(re.search(r"^GFLOPs per second of audio: ([\d.]+)$", out, re.M).group(1))
    assert gflops > 0


def test_defaults_compose_the_conformer_and_input_size_reaches_the_encoder():
    cfg = compose_config()
    assert cfg.get("model") is None and cfg.encoder._target_ == "speechlm.encoders.conformer.ConformerEncoder"
    assert compose_config(["input_size=40"]).encoder.input_size == 40
    assert type(build_model(compose_config(TINY))).__name__ == "ConformerEncoder"
    with pytest.raises(Exception, match="no_such_preset"):
        compose_config(["experiment=no_such_preset"])  # a typo is an error, not a silent default


@pytest.mark.parametrize("encoder", ["conformer", "transformer"])
def test_flops_grow_linearly_with_blocks(encoder):
    flops = []
    for n in (2, 4, 6):
        cfg = compose_config([f"encoder={encoder}", *TINY[:2], f"encoder.num_blocks={n}"])
        flops.append(forward_flops(build_model(cfg), cfg.input_size))
    assert 0 < flops[0] < flops[1] < flops[2]
    # Every block costs the same: equal steps, so a + b * num_blocks.
    assert flops[2] - flops[1] == pytest.approx(flops[1] - flops[0], rel=1e-6)


def test_flops_count_matmuls_of_a_linear_layer():
    """A check of the counter itself: y = x W^T over 1000 frames is 2 * 1000 * in * out."""
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(80, 32, bias=False)

        def forward(self, xs, lengths):
            return self.proj(xs)

    assert forward_flops(Linear(), 80) == 2 * 1000 * 80 * 32
    assert num_params(Linear()) == 80 * 32


def test_our_attention_is_counted():
    """Our attention is plain matmuls (no SDPA kernel), all of which the counter sees:
    projections 2*T*D*3D + 2*T*D*D, scores and weighted sum 2 * 2*T*T*D."""
    from speechlm.nn.attention import MultiHeadAttention

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MultiHeadAttention(4, 80)

        def forward(self, xs, lengths):
            return self.attn(xs, None, None)

    t, d = 1000, 80
    assert forward_flops(Attention(), d) == 2 * t * d * 3 * d + 2 * t * d * d + 2 * 2 * t * t * d


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_conv_backward_costs_twice_the_forward(groups):
    """torch's own formula counts a grouped conv's weight gradient as if dense; ours does not."""
    from speechlm.bin.model_info import flop_counter

    conv = torch.nn.Conv1d(16, 16, kernel_size=5, groups=groups)
    x = torch.randn(2, 16, 50, requires_grad=True)
    with flop_counter() as counter:
        conv(x).sum().backward()
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    forward = 2 * 2 * 16 * (16 // groups) * 5 * 46
    assert counts == {"aten.convolution": forward, "aten.convolution_backward": 2 * forward}


# Gulati et al. 2020, Table 1. Vocabulary 1024 word pieces (conf/model_info.yaml): the paper
# does not say; see conf/experiment/conformer_transducer_s.yaml.
@pytest.mark.parametrize("size, paper", [("s", 10.3e6), ("m", 30.7e6), ("l", 118.8e6)])
def test_conformer_transducer_presets_match_the_papers_parameter_counts(capsys, size, paper):
    out = run(capsys, f"experiment=conformer_transducer_{size}")
    total = int(re.search(r"^total params: (\d+)$", out, re.M).group(1))
    assert abs(total - paper) <= 0.03 * paper, f"{total:,} vs the paper's {paper:,.0f}"
    assert re.search(r"^predictor\s", out, re.M) and re.search(r"^joiner\s", out, re.M)
    assert "TransducerModel" in out
