"""Learning-rate schedules, as `torch.optim.lr_scheduler.LambdaLR` factors per step."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_lr(optimizer: Optimizer, warmup_steps: int = 25000) -> LambdaLR:
    """ESPnet's `warmuplr` (Noam without the model-size factor): the lr rises linearly for
    `warmup_steps`, peaks at the optimizer's lr, then decays as 1/sqrt(step)."""

    def factor(step: int) -> float:
        step = step + 1
        return warmup_steps**0.5 * min(step**-0.5, step * warmup_steps**-1.5)

    return LambdaLR(optimizer, factor)


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> LambdaLR:
    """Linear warmup, then cosine decay to `min_ratio` x lr at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
