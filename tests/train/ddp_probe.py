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
