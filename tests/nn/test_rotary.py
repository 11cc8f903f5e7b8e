"""speechlm.nn.rotary against transformers' LlamaRotaryEmbedding: the same cos/sin for every
supported `rope_scaling` type (yarn's attention factor and dynamic NTK beyond
max_position_embeddings included), padded position ids, and unsupported types refused."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as HFRotary

from speechlm.nn.rotary import LlamaRotaryEmbedding

SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    "yarn_mscale": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 1.0,
                    "mscale_all_dim": 0.5, "beta_fast": 16, "beta_slow": 2},
}


@pytest.mark.parametrize("name", list(SCALINGS))
@pytest.mark.parametrize("length", [12, 40])  # within and beyond max_position_embeddings (32)
def test_cos_sin_equal_transformers(name, length):
    scaling = SCALINGS[name]
    config = LlamaConfig(hidden_size=64, num_attention_heads=2, head_dim=32, max_position_embeddings=32,
                         rope_parameters={"rope_type": "default", **(scaling or {}), "rope_theta": 50000.0})
    theirs = HFRotary(config)
    ours = LlamaRotaryEmbedding(32, 50000.0, scaling, 32)
    positions = torch.arange(length).repeat(2, 1)
    positions[0, :5] = 0  # a left-padded row: padding at position 0, as generate makes it
    positions[0, 5:] -= 5
    ref_cos, ref_sin = theirs(torch.zeros(1, dtype=torch.float32), positions)
    cos, sin = ours(positions)
    assert torch.allclose(cos, ref_cos, atol=1e-6) and torch.allclose(sin, ref_sin, atol=1e-6)
    if name.startswith("yarn"):
        assert ours.attention_factor == pytest.approx(theirs.attention_scaling) and ours.attention_factor != 1.0


def test_unsupported_scaling_is_refused():
    with pytest.raises(ValueError, match="'longrope' is not supported"):
        LlamaRotaryEmbedding(32, 10000.0, {"rope_type": "longrope", "factor": 2.0})
