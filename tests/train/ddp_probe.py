"""A Lightning callback for the DDP test: which utterances each rank trained on, per
epoch, and a digest of its final weights; written to OUT_DIR/rank<R>.json at the end."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


class RecordBatches(L.Callback):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["ids"])

    def on_train_end(self, trainer, pl_module):
        digest = hashlib.sha256()
        for name, p in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps({
            "world_size": trainer.world_size, "global_step": trainer.global_step,
            "seen": {str(e): ids for e, ids in self.seen.items()}, "weights": digest.hexdigest(),
        }))


class PlantFault(L.Callback):
    """On rank `rank`, at optimizer step `step`: `nan_loss` makes the model's loss NaN (on that
    rank only); `raise` raises; `kill` SIGKILLs the process (after the checkpoints of the
    previous step were written)."""

    def __init__(self, kind: str, step: int, rank: int = 0):
        self.kind, self.step, self.rank = kind, int(step), int(rank)
        self._hook = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank != self.rank or trainer.global_step != self.step:
            return
        if self.kind == "nan_loss":
            self._hook = pl_module.model.register_forward_hook(
                lambda module, args, out: {**out, "loss": out["loss"] * float("nan")})
        elif self.kind == "raise":
            raise RuntimeError(f"planted fault on rank {self.rank} at step {self.step}")
        elif self.kind == "kill":
            import os
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
