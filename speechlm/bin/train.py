"""Train a model: a Hydra app over conf/train.yaml.

    python -m speechlm.bin.train data.train_dir=data/train_sp data.valid_dir=data/dev \
        tokenizer_dir=data/tokenizer cmvn_stats=exp/cmvn.npz encoder=conformer trainer.max_epochs=30

Everything comes from the config: the model (`model`, any `_target_` following
`speechlm.models.protocol`, its parts' `init_from` applied when training starts from
scratch), the data module (`data`), the optimizer, schedule and parameter groups (`optim`),
the Lightning trainer. A tokenizer (`tokenizer_dir`) is optional: with one, `vocab_size`
and `special_ids` are filled in from it and it travels in every checkpoint.

Writes exp/<tag>/: config.yaml (resolved), checkpoints/ (last + best k, atomic,
weights_only-loadable, self-contained), tensorboard/, curves.png, train.log. Running the
same command again resumes from checkpoints/last.ckpt.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from speechlm.atomic import atomic_write_text
from speechlm.models.build import build_model
from speechlm.tokenizers.base import load_tokenizer
from speechlm.train.checkpoint_io import AtomicCheckpointIO, RNGStateCallback
from speechlm.train.curves import CurvePlot
from speechlm.train.task import Task

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("speechlm.train")


def build(cfg: DictConfig, resuming: bool = False):
    """(task, datamodule, trainer, resolved config) from a composed config; `vocab_size`
    and `special_ids` are filled in from the tokenizer, if there is one. The model's
    `init_from` parts are loaded unless `resuming` (the checkpoint has every weight)."""
    tokenizer = load_tokenizer(cfg.tokenizer_dir) if cfg.get("tokenizer_dir") else None
    if tokenizer is not None:
        cfg.vocab_size = tokenizer.vocab_size
        cfg.special_ids = tokenizer.special_ids
    elif OmegaConf.is_missing(cfg, "vocab_size"):
        # No text (pretraining): groups composed by default (the attention decoder) may
        # still name the vocabulary, which is fine as long as the model does not.
        try:
            OmegaConf.to_container(cfg.model, resolve=True)
        except (MissingMandatoryValue, InterpolationToMissingValueError) as e:
            raise ValueError(f"the model needs a tokenizer ({e.full_key} reads it) but tokenizer_dir is null; "
                             "give tokenizer_dir=DIR (speechlm.bin.train_tokenizer)") from None
        cfg.vocab_size = None
        if OmegaConf.is_missing(cfg, "special_ids"):
            cfg.special_ids = {}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(resolved["model"], initialize=not resuming)
    monitor, mode = cfg.checkpoint.monitor, cfg.checkpoint.mode
    if monitor is None:
        monitor, mode = model.checkpoint_criterion
    elif mode not in ("min", "max"):
        raise ValueError(f"checkpoint.monitor={monitor} needs checkpoint.mode=min or max, got {mode}")
    task = Task(
        model,
        hydra.utils.instantiate(cfg.optim.optimizer),
        hydra.utils.instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        extra_state={"config": resolved, "tokenizer": tokenizer.to_dict() if tokenizer is not None else None},
        groups=resolved["optim"].get("groups"), layer_decay=resolved["optim"].get("layer_decay"),
        checkpoint_criterion=(monitor, mode),
    )
    dm = hydra.utils.instantiate(cfg.data)
    exp = Path(cfg.exp_dir)
    callbacks = [
        ModelCheckpoint(dirpath=exp / "checkpoints", filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                        save_last=True, save_top_k=cfg.checkpoint.save_top_k, monitor=monitor, mode=mode),
        RNGStateCallback(),
        CurvePlot(exp / "curves.png"),
        *(hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()),
    ]
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        default_root_dir=exp, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
        logger=TensorBoardLogger(exp, name="tensorboard", version=""), use_distributed_sampler=False,
    )
    return task, dm, trainer, resolved


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Denormal floats (tiny gradients, Adam's second moments early on) run ~100x slower on
    # x86 CPUs; flushing them to zero changes nothing a model can notice.
    torch.set_flush_denormal(True)
    exp = Path(cfg.exp_dir)
    last = exp / "checkpoints" / "last.ckpt"
    task, dm, trainer, resolved = build(cfg, resuming=last.exists())
    if trainer.is_global_zero:
        text = OmegaConf.to_yaml(OmegaConf.create(resolved))
        previous = exp / "config.yaml"
        if last.exists() and previous.exists() and previous.read_text() != text:
            log.warning("%s differs from this run's config; resuming anyway with the new one", previous)
        atomic_write_text(previous, text)
    n_params = sum(p.numel() for p in task.model.parameters())
    log.info("model: %s parameters; exp dir %s%s", f"{n_params:,}", exp, "; resuming from " + str(last) if last.exists() else "")
    trainer.fit(task, dm, ckpt_path=last if last.exists() else None)
    if task.skipped_batches:
        log.warning("%d batches had a non-finite loss and were skipped", task.skipped_batches)


if __name__ == "__main__":
    sys.exit(main())
