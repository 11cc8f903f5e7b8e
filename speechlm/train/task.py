"""`Task`: the one LightningModule. It wraps any model whose `forward(batch)` returns a
dict with `loss` and named scalar stats, and owns what every experiment shares:
optimizer and LR schedule (from config), logging, skipping non-finite losses, and what a
checkpoint must carry to be self-contained (config, tokenizer)."""
from __future__ import annotations

import logging
from typing import Any, Callable

import lightning as L
import torch
from torch import nn

log = logging.getLogger(__name__)


class Task(L.LightningModule):
    """`optimizer(params)` and `scheduler(optimizer)` are factories (Hydra `_partial_`).
    The scheduler steps every optimizer step. `extra_state` (the resolved config, the
    tokenizer dict, ...) is written into every checkpoint under `speechlm`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        extra_state: dict | None = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.extra_state = extra_state or {}
        self.skipped_batches = 0

    def forward(self, batch: dict) -> dict:
        return self.model(batch)

    def _log_stats(self, stats: dict, prefix: str, batch_size: int, on_step: bool) -> None:
        for name, value in stats.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.detach().float()
            elif not isinstance(value, (int, float)):
                continue
            self.log(f"{prefix}/{name}", value, on_step=on_step, on_epoch=not on_step, batch_size=batch_size,
                     prog_bar=name in ("loss", "acc"), sync_dist=not on_step)

    def training_step(self, batch: dict, batch_idx: int):
        stats = self.model(batch)
        loss = stats["loss"]
        if not torch.isfinite(loss):
            # One bad batch (e.g. a CTC target longer than its input) must not poison the
            # weights: skip it, count it, say so.
            self.skipped_batches += 1
            log.warning("non-finite loss on batch %d (%s); skipped (%d so far)", batch_idx,
                        ", ".join(batch.get("ids", [])[:3]), self.skipped_batches)
            self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, batch_size=1)
            return None
        self._log_stats(stats, "train", len(batch["audio_lens"]), on_step=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, batch_size=1)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        stats = self.model(batch)
        self._log_stats(stats, "valid", len(batch["audio_lens"]), on_step=False)

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["speechlm"] = {**self.extra_state, "skipped_batches": self.skipped_batches}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_batches = checkpoint.get("speechlm", {}).get("skipped_batches", 0)
