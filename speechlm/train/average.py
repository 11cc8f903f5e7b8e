"""Average model weights of several checkpoints (ESPnet's `valid.acc.ave`, icefall's
`--avg`): a cheap, reliable gain over the single best checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from speechlm.atomic import atomic_path
from speechlm.safe_load import load_weights


def load_checkpoint(path: str | Path) -> dict:
    return load_weights(path)


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of floating-point tensors; integer buffers (BatchNorm's num_batches_tracked)
    are summed-then-floored like ESPnet's average_nbest_models."""
    if not state_dicts:
        raise ValueError("no checkpoints to average")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], start=1):
        if list(sd) != keys:
            raise ValueError(f"checkpoint {i} has different parameters from checkpoint 0")
    out = {}
    for k in keys:
        stacked = torch.stack([sd[k].double() if sd[k].is_floating_point() else sd[k] for sd in state_dicts])
        if state_dicts[0][k].is_floating_point():
            out[k] = stacked.mean(0).to(state_dicts[0][k].dtype)
        else:
            out[k] = torch.div(stacked.sum(0), len(state_dicts), rounding_mode="floor")
    return out


def average_checkpoints(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Write a self-contained averaged model: `state_dict` (of the wrapped model, without
    Lightning's `model.` prefix) plus the first checkpoint's `speechlm` block."""
    ckpts = [load_checkpoint(p) for p in paths]
    state_dicts = [{k.removeprefix("model."): v for k, v in c["state_dict"].items()} for c in ckpts]
    averaged = {
        "state_dict": average_state_dicts(state_dicts),
        "speechlm": {**ckpts[0].get("speechlm", {}), "averaged_from": [str(p) for p in paths]},
    }
    with atomic_path(out) as tmp:
        torch.save(averaged, tmp)
    return Path(out)
