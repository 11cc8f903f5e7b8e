"""Load a trained model from a checkpoint alone: a Lightning checkpoint (`last.ckpt`,
`epochNNN.ckpt`) or an averaged `model.avg.ckpt`. Both carry the resolved config and the
tokenizer (`speechlm` block), and load with `torch.load(weights_only=True)`."""
from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from torch import nn

from speechlm.features import GlobalCMVN
from speechlm.tokenizers.base import Tokenizer, tokenizer_from_dict


def load_pretrained(path: str | Path, device: str = "cpu") -> tuple[nn.Module, Tokenizer, dict]:
    """(model in eval mode, tokenizer, resolved training config)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    meta = ckpt.get("speechlm")
    if not meta or "config" not in meta:
        raise ValueError(f"{path}: not a speechlm checkpoint (no 'speechlm' block with the config)")
    config = meta["config"]
    model_cfg = OmegaConf.create(config["model"])
    overrides = {}
    if model_cfg.get("normalize") is not None and str(model_cfg.normalize.get("_target_", "")).endswith(
            "GlobalCMVN.from_stats_file"):
        # The training run read CMVN stats from a file that need not exist here; the
        # statistics themselves are buffers in the state_dict.
        dim = int(config["frontend"]["n_mels"])
        norm = {k: bool(model_cfg.normalize[k]) for k in ("norm_means", "norm_vars") if k in model_cfg.normalize}
        overrides["normalize"] = GlobalCMVN(torch.zeros(dim), torch.ones(dim), **norm)
    model = hydra.utils.instantiate(model_cfg, **overrides)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    return model.eval().to(device), tokenizer_from_dict(meta["tokenizer"]), config
