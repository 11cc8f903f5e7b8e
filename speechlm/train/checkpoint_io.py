"""Checkpoint files: written atomically, loadable with `torch.load(weights_only=True)`.

Lightning writes checkpoints through a `CheckpointIO`; ours renames a finished temporary
file over the target, so a run killed mid-save (SIGKILL, out of memory) leaves the
previous checkpoint intact. RNG states travel as tensors/ints so `weights_only` loading
still works and a resumed run continues with the same random numbers.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from speechlm.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes through `atomic_path` (temporary file, fsync, rename, fsync of the directory).
    Before `last.ckpt` is replaced, the previous one is kept as `last.prev.ckpt` (a hard
    link: no copy), so a resume has a fallback if the new one turns out unreadable."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        if path.name == "last.ckpt" and path.is_file():
            keep_previous(path, path.with_name("last.prev.ckpt"))
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def keep_previous(path: Path, previous: Path) -> None:
    """`previous` becomes (atomically) the file `path` is now."""
    if previous.exists() and os.path.samefile(path, previous):
        return  # already (a run killed between keeping the previous and writing the new one)
    with atomic_path(previous) as tmp:
        try:
            os.link(path, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, tmp)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


class RNGStateCallback(L.Callback):
    """Save the RNG states with each checkpoint and restore them on resume, so that a
    resumed run draws the same dropout masks and SpecAugment masks as an uninterrupted one."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_state"] = rng_state()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if "rng_state" in checkpoint:
            set_rng_state(checkpoint["rng_state"])
