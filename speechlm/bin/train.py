"""Train a model: a Hydra app over conf/train.yaml.

    python -m speechlm.bin.train data.train_dir=data/train_sp data.valid_dir=data/dev \
        tokenizer_dir=data/tokenizer cmvn_stats=exp/cmvn.npz encoder=conformer trainer.max_epochs=30

Everything comes from the config: the model (`model`, any `_target_` following
`speechlm.models.protocol`, its parts' `init_from` applied when training starts from
scratch), the data module (`data`), the optimizer, schedule and parameter groups (`optim`),
the Lightning trainer. A tokenizer (`tokenizer_dir`) is optional: with one, `vocab_size`
and `special_ids` are filled in from it and it travels in every checkpoint.

Writes exp/<tag>/: config.yaml (resolved), checkpoints/ (last + best k, atomic,
weights_only-loadable, self-contained; `checkpoint.every_n_steps` / `every_minutes` add
mid-epoch saves of last.ckpt), tensorboard/, curves.png, train.log. Running the same command
again resumes from checkpoints/last.ckpt (to the batch: see speechlm.train.data_module),
or from the newest checkpoint that loads if last.ckpt is corrupt; it refuses if the model
config, tokenizer or CMVN statistics differ from the checkpoint's, unless `resume=force`
(`resume=never` starts from scratch whatever is there: move the old exp dir away first).
"""
from __future__ import annotations

import logging
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import hydra
import torch
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from speechlm.atomic import atomic_write_text, sweep_temp_files
from speechlm.models.build import build_model
from speechlm.tokenizers.base import load_tokenizer
from speechlm.train.checkpoint_io import AtomicCheckpointIO, RNGStateCallback
from speechlm.train.curves import CurvePlot
from speechlm.train.resume import file_fingerprint, resume_checkpoint, resume_mismatches
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
        extra_state={"config": resolved, "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
                     "fingerprints": {"cmvn_stats": file_fingerprint(cfg.get("cmvn_stats"))}},
        groups=resolved["optim"].get("groups"), layer_decay=resolved["optim"].get("layer_decay"),
        checkpoint_criterion=(monitor, mode),
    )
    rate, data_rate = getattr(model, "sample_rate", None), (resolved.get("data") or {}).get("sample_rate")
    if rate is not None and data_rate is not None and int(rate) != int(data_rate):
        # a model whose frontend comes with a loaded part (a speech-LLM's encoder checkpoint)
        raise ValueError(f"data.sample_rate={data_rate}, but {type(model).__name__} takes {rate} Hz audio: "
                         f"set data.sample_rate={rate}")
    dm = hydra.utils.instantiate(cfg.data)
    exp = Path(cfg.exp_dir)
    every_steps, every_minutes = cfg.checkpoint.get("every_n_steps"), cfg.checkpoint.get("every_minutes")
    periodic = []
    if every_steps or every_minutes:  # last.ckpt mid-epoch, every N updates or M minutes
        periodic = [ModelCheckpoint(dirpath=exp / "checkpoints", save_last=True, save_top_k=0,
                                    every_n_train_steps=every_steps or None,
                                    train_time_interval=timedelta(minutes=every_minutes) if every_minutes else None)]
    callbacks = [
        ModelCheckpoint(dirpath=exp / "checkpoints", filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                        save_last=True, save_top_k=cfg.checkpoint.save_top_k, monitor=monitor, mode=mode),
        *periodic,
        RNGStateCallback(),
        CurvePlot(exp / "curves.png"),
        *(hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()),
    ]
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if isinstance(trainer_args.get("strategy"), dict):  # a strategy built from config (speechlm.train.strategies)
        trainer_args["strategy"] = hydra.utils.instantiate(trainer_args["strategy"])
    trainer = L.Trainer(
        **trainer_args,
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
    policy = cfg.get("resume", "auto")
    if policy not in ("auto", "force", "never"):
        raise ValueError(f"resume={policy}: expected auto, force or never")
    for d in (exp, exp / "checkpoints"):  # temporary files of a run killed while writing
        for tmp in sweep_temp_files(d) if d.is_dir() else []:
            log.warning("removed %s (left by a run killed while writing it)", tmp)
    found = resume_checkpoint(exp / "checkpoints") if policy != "never" else None
    task, dm, trainer, resolved = build(cfg, resuming=found is not None)
    if found is not None:
        blocking, other = resume_mismatches(found[1], resolved, task.extra_state["tokenizer"],
                                            task.extra_state["fingerprints"])
        if blocking and policy != "force":
            raise ValueError(f"{found[0]} was trained with a different setup; refusing to resume "
                             "(resume=force resumes anyway; or use another exp_dir):\n  " + "\n  ".join(blocking))
        for line in blocking + other:
            log.warning("resuming with a change from %s: %s", found[0], line)
    if trainer.is_global_zero:
        atomic_write_text(exp / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    n_params = sum(p.numel() for p in task.model.parameters())
    log.info("model: %s parameters; exp dir %s%s", f"{n_params:,}", exp,
             f"; resuming from {found[0]} (step {found[1].get('global_step')})" if found else "")
    trainer.fit(task, dm, ckpt_path=found[0] if found else None)
    report_training(task, exp, trainer.global_rank)


def report_training(task: Task, exp: Path, rank: int) -> None:
    """What was trained on and what was left out, in the log (and exp/bad_utterances)."""
    task.write_bad_utterances(exp)
    where = f"rank {rank}: " if rank else ""
    log.info("%strained on %d utterances (summed over epochs); %d left out", where,
             task.trained_utterances, task.skipped_utterances)
    if task.bad_utterances:
        kinds = Counter(reason.split(":")[0].split(" (")[0] for reason in task.bad_utterances.values())
        log.warning("%s%d training utterances were left out (%s); listed in %s", where, len(task.bad_utterances),
                    ", ".join(f"{n} {k}" for k, n in kinds.most_common()), exp / "bad_utterances")
    if task.skipped_batches:
        log.warning("%s%d steps were skipped (non-finite loss or no usable utterance)", where, task.skipped_batches)


if __name__ == "__main__":
    sys.exit(main())
