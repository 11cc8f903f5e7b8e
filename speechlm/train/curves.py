"""A PNG of train/valid curves in the experiment dir, redrawn after every validation, so a
researcher can glance at a run without starting TensorBoard."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import lightning as L

from speechlm.atomic import atomic_path


class CurvePlot(L.Callback):
    def __init__(self, path: str | Path, metrics: tuple[str, ...] = ("loss", "acc")):
        self.path = Path(path)
        self.metrics = metrics
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for m in self.metrics:
            value = trainer.callback_metrics.get(f"train/{m}")
            if value is not None:
                self.history[f"train/{m}"].append((trainer.global_step, float(value)))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for m in self.metrics:
            value = trainer.callback_metrics.get(f"valid/{m}")
            if value is not None:
                self.history[f"valid/{m}"].append((trainer.global_step, float(value)))
        self.draw()

    def draw(self) -> None:
        import matplotlib

        matplotlib.use("Agg")  # no display on training machines
        import matplotlib.pyplot as plt

        shown = [m for m in self.metrics if self.history.get(f"train/{m}") or self.history.get(f"valid/{m}")]
        if not shown:
            return
        fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.5), squeeze=False)
        for ax, m in zip(axes[0], shown):
            for split, style in (("train", "-"), ("valid", "o-")):
                points = self.history.get(f"{split}/{m}", [])
                if points:
                    ax.plot(*zip(*points), style, label=split, alpha=0.8)
            ax.set_xlabel("step")
            ax.set_title(m)
            ax.legend()
            ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(self.path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)

    def state_dict(self) -> dict:
        return {k: [list(p) for p in v] for k, v in self.history.items()}

    def load_state_dict(self, state: dict) -> None:
        self.history = defaultdict(list, {k: [tuple(p) for p in v] for k, v in state.items()})
