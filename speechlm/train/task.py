"""`Task`: the one LightningModule. It wraps any model whose `forward(batch)` returns a
dict with `loss` and named scalar stats (`speechlm.models.protocol`), and owns what every
experiment shares: optimizer and LR schedule (from config) with parameter groups, logging,
skipping non-finite losses, and what a checkpoint must carry to be self-contained (config,
tokenizer, the checkpoint criterion).

Parameter groups (`optim.groups`, module path -> options; the longest matching path wins):

    optim.groups.encoder: {lr_scale: 0.1, freeze_steps: 2000, weight_decay: 0.0}

`lr_scale` multiplies the optimizer's lr (the schedule scales every group alike);
`freeze_steps` keeps the group's weights unchanged for that many optimizer steps (their
gradients are dropped before the step, so the optimizer neither moves them nor updates its
moments; DDP-safe), and its BatchNorm statistics too (those layers run in eval mode while
frozen); `weight_decay` overrides the optimizer's. `optim.layer_decay`
({module: encoder, decay: 0.9}) gives the module's stem decay^(L+1), block i (1-based)
decay^(L+1-i), and every other parameter (final norm, heads) 1, times any `lr_scale`:
layer-wise learning-rate decay for fine-tuning (BEiT, data2vec).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy
from lightning.fabric.utilities.data import sized_len
import torch
from torch import nn

from speechlm.atomic import atomic_write_text
from speechlm.data.collate import batch_size, select_rows

log = logging.getLogger(__name__)


def _matching_group(name: str, groups: Mapping[str, Any]) -> str | None:
    matches = [path for path in groups if name == path or name.startswith(path + ".")]
    return max(matches, key=len) if matches else None


def layer_depth(name: str, module: str, num_blocks: int) -> int:
    """0 for the module's stem, i for its block i-1 (`<module>.encoders.<i-1>.`), and
    num_blocks + 1 for everything else."""
    if not name.startswith(module + "."):
        return num_blocks + 1
    rest = name[len(module) + 1:]
    if rest.startswith("encoders."):
        return int(rest.split(".")[1]) + 1
    if rest.startswith(("embed.", "pos_enc.")):
        return 0
    return num_blocks + 1


class Task(L.LightningModule):
    """`optimizer(params)` and `scheduler(optimizer)` are factories (Hydra `_partial_`).
    The scheduler steps every optimizer step. `extra_state` (the resolved config, the
    tokenizer dict, ...) is written into every checkpoint under `speechlm`, with the
    checkpoint criterion (`checkpoint_criterion`: (metric, "min" | "max")), which averaging
    reads. `groups` and `layer_decay`: see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        extra_state: dict | None = None,
        groups: Mapping[str, Mapping[str, Any]] | None = None,
        layer_decay: Mapping[str, Any] | None = None,
        checkpoint_criterion: tuple[str, str] | None = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.extra_state = extra_state or {}
        self.groups = {str(k): dict(v or {}) for k, v in (groups or {}).items()}
        for path, options in self.groups.items():
            unknown = set(options) - {"lr_scale", "freeze_steps", "weight_decay"}
            if unknown:
                raise ValueError(f"optim.groups.{path}: unknown options {sorted(unknown)} "
                                 "(lr_scale, freeze_steps, weight_decay)")
            if path and not any(n == path or n.startswith(path + ".") for n, _ in model.named_parameters()):
                raise ValueError(f"optim.groups.{path}: the model has no parameters under '{path}'")
        self.layer_decay = dict(layer_decay) if layer_decay else None
        self.checkpoint_criterion = checkpoint_criterion
        self.skipped_batches = 0
        self.trained_utterances = 0  # utterances in batches trained on (every epoch's)
        self.skipped_utterances = 0  # bad utterances left out (every time one came up)
        self.bad_utterances: dict[str, str] = {}  # training utterance -> why it was left out
        self.bad_valid: dict[str, str] = {}
        self._trained_batches_since_step = 0  # the optimizer step is skipped if none was (all skipped)
        self._ctc_heads: list[nn.Module] | None = None
        self._frozen: list[tuple[int, str, list[nn.Parameter]]] = []

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
        if batch.get("pad"):
            # A padding batch (sharded data: this rank has no real batch left, another has):
            # take part in the step (the ranks' agreement, the all-reduce of a zero gradient)
            # and train nothing. Stepping with the others keeps the ranks' weights equal.
            if self._all_ranks_agree(True):
                self._trained_batches_since_step += 1
            return self._zero_loss()
        self._note_bad(batch.get("dropped", ()))
        size = batch_size(batch)
        stats = self._forward_alignable(batch) if size else None
        loss = stats["loss"] if stats is not None else None
        ok = loss is not None and bool(torch.isfinite(loss))
        # Every rank must take the same decision (a rank returning None, or stepping while
        # another does not, hangs or desynchronises DDP): agree, then all skip or all step.
        if not self._all_ranks_agree(ok):
            # A non-finite loss (here or on another rank) must not poison the weights: no
            # update this step (gradients dropped before the optimizer), counted, said.
            self.skipped_batches += 1
            why = ("no usable utterance in the batch" if loss is None else
                   "non-finite loss" if not ok else "a non-finite loss on another rank")
            log.warning("batch %d (%s): %s; step skipped (%d so far)", batch_idx,
                        ", ".join(batch.get("ids", [])[:3]) or "-", why, self.skipped_batches)
            self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, batch_size=1)
            return self._zero_loss()
        self.trained_utterances += size
        self._trained_batches_since_step += 1
        self._log_stats(stats, "train", size, on_step=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, batch_size=1)
        return loss

    def _forward_alignable(self, batch: dict) -> dict | None:
        """The model's stats on the batch, without the utterances a CTC head cannot align
        (transcript longer than its frames: CTC's loss is infinite, zeroed, i.e. they would
        train as nothing): those are dropped, counted and the rest run again."""
        if self._ctc_heads is None:
            self._ctc_heads = [m for m in self.model.modules() if hasattr(m, "last_infeasible")]
        ctcs = self._ctc_heads
        for m in ctcs:
            m.last_infeasible = None
        stats = self.model(batch)
        bad = torch.zeros(batch_size(batch), dtype=torch.bool)
        for m in ctcs:
            if m.last_infeasible is not None and len(m.last_infeasible) == len(bad):
                bad |= m.last_infeasible.cpu()
        if not bad.any():
            return stats
        frames = "transcript longer than the model can emit (CTC: more tokens + repeats than encoder frames)"
        ids = batch.get("ids") or [f"row {i}" for i in range(len(bad))]
        self._note_bad([(ids[i], frames) for i in bad.nonzero().flatten().tolist()])
        keep = (~bad).nonzero().flatten()
        return self.model(select_rows(batch, keep)) if len(keep) else None

    def _all_ranks_agree(self, ok: bool) -> bool:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return ok
        flag = torch.tensor([0.0 if ok else 1.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item() == 0.0)

    def _zero_loss(self) -> torch.Tensor:
        """0, but connected to every trainable parameter: backward gives every gradient
        (zero), so DDP's all-reduce runs on every rank as usual."""
        return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0

    def _note_bad(self, dropped) -> None:
        for utt, reason in dropped:
            if utt not in self.bad_utterances:
                log.warning("utterance '%s' skipped: %s", utt, reason)
            self.bad_utterances[utt] = reason
            self.skipped_utterances += 1

    def write_bad_utterances(self, exp_dir: Path) -> None:
        """`exp_dir/bad_utterances` (rank > 0: `bad_utterances.rankR`): `utt reason` lines."""
        if not self.bad_utterances:
            return
        rank = self.trainer.global_rank if self._trainer is not None else 0
        name = "bad_utterances" if rank == 0 else f"bad_utterances.rank{rank}"
        atomic_write_text(Path(exp_dir) / name, "".join(f"{u} {r}\n" for u, r in sorted(self.bad_utterances.items())))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for utt, reason in batch.get("dropped", ()):
            if utt not in self.bad_valid:
                self.bad_valid[utt] = reason
                log.warning("validation utterance '%s' left out: %s", utt, reason)
        if not batch_size(batch):
            return
        stats = self.model(batch)
        self._log_stats(stats, "valid", batch_size(batch), on_step=False)

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: one per (group path, lr scale, weight decay),
        each with `lr_scale` and `freeze_steps` recorded."""
        decay = self.layer_decay
        if decay is not None:
            blocks = len(self.model.get_submodule(decay["module"]).encoders)
        buckets: dict[tuple, dict[str, Any]] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            path = _matching_group(name, self.groups)
            options = self.groups.get(path, {}) if path is not None else {}
            scale = float(options.get("lr_scale", 1.0))
            if decay is not None:
                scale *= float(decay["decay"]) ** (blocks + 1 - layer_depth(name, decay["module"], blocks))
            key = (path, scale, options.get("weight_decay"))
            group = buckets.setdefault(key, {"params": [], "lr_scale": scale, "group": path or "",
                                             "freeze_steps": int(options.get("freeze_steps", 0))})
            if options.get("weight_decay") is not None:
                group["weight_decay"] = float(options["weight_decay"])
            group["params"].append(p)
        return list(buckets.values())

    def configure_optimizers(self):
        groups = self.param_groups()
        opt = self.optimizer_factory(groups)
        for group in opt.param_groups:  # before the scheduler records each group's initial lr
            group["lr"] = group["lr"] * group["lr_scale"]
        self._frozen = [(g["freeze_steps"], g["group"], g["params"]) for g in opt.param_groups if g["freeze_steps"] > 0]
        if len(groups) > 1 or any(g["lr_scale"] != 1.0 for g in groups):
            log.info("parameter groups: %s", "; ".join(
                f"{g['group'] or 'rest'}: {sum(p.numel() for p in g['params']):,} params, lr x {g['lr_scale']:.3g}"
                + (f", frozen {g['freeze_steps']} steps" if g["freeze_steps"] else "") for g in opt.param_groups))
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        # DurationBucketSampler's batch count may change by one or two between epochs
        # (greedy packing of a reshuffled order), but Lightning counts an epoch's batches
        # once, in the first: an epoch with fewer would never validate
        # ((batch_idx + 1) % val_check_batch is never 0) and one with more would lose its
        # last batches. Recount them for this epoch (its sampler epoch is set by now, and
        # the epoch's iterator not yet made), unless limit_train_batches fixes the count.
        trainer, loop = self.trainer, self.trainer.fit_loop
        combined = loop._combined_loader
        if combined is None or not (isinstance(trainer.limit_train_batches, float) and trainer.limit_train_batches == 1.0):
            return
        lengths = [sized_len(dl) for dl in combined.flattened]
        if None in lengths or lengths == combined.limits:
            return
        combined.limits = lengths
        # what len(combined) will be once the epoch's iterator exists (training's modes)
        loop.max_batches = min(lengths) if combined._mode == "min_size" else max(lengths)
        if trainer.check_val_every_n_epoch is not None and isinstance(trainer.val_check_interval, float):
            trainer.val_check_batch = max(1, int(loop.max_batches * trainer.val_check_interval))

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Frozen groups' BatchNorm layers keep their statistics (Lightning puts the whole
        # model in train mode at every epoch start, so this is decided per batch).
        for steps, path, _ in self._frozen:
            frozen = self.trainer.global_step < steps
            for m in (self.model.get_submodule(path) if path else self.model).modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train(not frozen)

    def on_before_optimizer_step(self, optimizer) -> None:
        skip, self._trained_batches_since_step = self._trained_batches_since_step == 0, 0
        if skip:  # every (accumulated) batch of this step skipped: no parameter moves, no moment changes
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            return
        # Frozen groups: no gradient, so the optimizer skips them (no step, no moments).
        for steps, _, params in self._frozen:
            if self.trainer.global_step < steps:
                for p in params:
                    p.grad = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Under FSDP each rank holds a shard of every gradient: the norm must be the global
        # one, which only the FSDP root module can compute (Lightning refuses norm clipping
        # there otherwise).
        if gradient_clip_val and (gradient_clip_algorithm or "norm") == "norm" and self._trainer is not None \
                and isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        criterion = list(self.checkpoint_criterion) if self.checkpoint_criterion else None
        if self._trainer is not None:  # the list on disk is as current as the checkpoint
            self.write_bad_utterances(self.trainer.default_root_dir)
        checkpoint["speechlm"] = {**self.extra_state, "skipped_batches": self.skipped_batches,
                                  "trained_utterances": self.trained_utterances,
                                  "skipped_utterances": self.skipped_utterances,
                                  "bad_utterances": dict(self.bad_utterances),
                                  "checkpoint_criterion": criterion}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("speechlm", {})
        self.skipped_batches = meta.get("skipped_batches", 0)
        self.trained_utterances = meta.get("trained_utterances", 0)
        self.skipped_utterances = meta.get("skipped_utterances", 0)
        self.bad_utterances = dict(meta.get("bad_utterances") or {})


