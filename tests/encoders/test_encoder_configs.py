"""Every conf/encoder/*.yaml builds standalone and runs a tiny forward pass."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from speechlm.models.build import build_model

CONF = Path(__file__).resolve().parents[2] / "conf" / "encoder"
CONFIGS = sorted(CONF.glob("*.yaml"))


def test_the_expected_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"transformer", "conformer", "e_branchformer", "conformer_s", "conformer_m", "conformer_l"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_and_runs(path):
    # the frontend's size is what train.yaml composes in (Whisper's encoder reads ${frontend.n_mels})
    cfg = OmegaConf.merge({"frontend": {"n_mels": 80}}, {"encoder": OmegaConf.load(path)}).encoder
    encoder = build_model(cfg, initialize=False).eval()
    xs, lengths = torch.randn(2, 40, cfg.input_size), torch.tensor([40, 31])
    with torch.no_grad():
        out = encoder(xs, lengths)
    assert out.output.shape[0] == 2 and out.output.shape[2] == encoder.output_size()
    assert out.lengths.tolist()[0] == out.output.shape[1]
    assert torch.isfinite(out.output).all()


@pytest.mark.parametrize("size,blocks,dim,heads", [("s", 16, 144, 4), ("m", 16, 256, 4), ("l", 17, 512, 8)])
def test_conformer_paper_sizes(size, blocks, dim, heads):
    """Gulati et al. 2020, Table 1 (kernel 31, not the paper's even 32: see the yaml)."""
    cfg = OmegaConf.load(CONF / f"conformer_{size}.yaml")
    assert (cfg.num_blocks, cfg.output_size, cfg.attention_heads) == (blocks, dim, heads)
    assert cfg.linear_units == 4 * dim and cfg.macaron_style and cfg.cnn_module_kernel == 31
