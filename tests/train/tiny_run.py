"""A tiny CTC training run used by the training tests (also as a subprocess that may be
SIGKILLed): python tiny_run.py DATA_DIR EXP_DIR EPOCHS [KILL_AT_STEP]. Re-running the same
command resumes from EXP_DIR/checkpoints/last.ckpt."""
from __future__ import annotations

import os
import signal
import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from speechlm.features import Fbank
from speechlm.nn.dropout import Dropout
from speechlm.train.checkpoint_io import AtomicCheckpointIO, RNGStateCallback
from speechlm.train.curves import CurvePlot
from speechlm.train.data_module import SpeechDataModule
from speechlm.train.schedules import warmup_lr
from speechlm.train.task import Task

VOCAB = " abcdefghijklmnopqrstuvwxyz0123456789"


def encode(text: str) -> list[int]:
    return [VOCAB.index(c) + 1 if c in VOCAB else 1 for c in text.lower()]


class TinyCTC(nn.Module):
    """Fbank -> 2x subsampling -> GRU -> CTC: small, but with dropout (RNG) and real data."""

    def __init__(self):
        super().__init__()
        self.fbank = Fbank(n_mels=40)
        self.proj = nn.Linear(80, 32)
        self.dropout = Dropout(0.1)
        self.rnn = nn.GRU(32, 32, batch_first=True)
        self.out = nn.Linear(32, len(VOCAB) + 1)

    def forward(self, batch):
        feats, lens = self.fbank(batch["audio"], batch["audio_lens"])
        t = feats.shape[1] // 2
        x = feats[:, : 2 * t].reshape(feats.shape[0], t, 80)
        lens = lens // 2
        h, _ = self.rnn(self.dropout(torch.relu(self.proj(x))))
        logp = self.out(h).log_softmax(-1).transpose(0, 1)
        tokens = batch["tokens"]
        loss = nn.functional.ctc_loss(logp, tokens.clamp_min(0), lens, batch["token_lens"], zero_infinity=True)
        return {"loss": loss, "frames": float(lens.sum())}


def run(data_dir: str, exp: str, epochs: int, kill_at_step: int | None = None) -> Task:
    L.seed_everything(0, verbose=False)
    exp = Path(exp)
    task = Task(TinyCTC(), partial(torch.optim.Adam, lr=3e-3), partial(warmup_lr, warmup_steps=5),
                extra_state={"config": {"model": "tiny"}}, checkpoint_criterion=("valid/loss", "min"))
    callbacks = [ModelCheckpoint(dirpath=exp / "checkpoints", save_last=True, save_top_k=2, monitor="valid/loss"),
                 RNGStateCallback(), CurvePlot(exp / "curves.png")]
    if kill_at_step is not None:
        class Kill(L.Callback):
            def on_train_batch_start(self, trainer, *args):
                if trainer.global_step == kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
        callbacks.append(Kill())
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, plugins=[AtomicCheckpointIO()], callbacks=callbacks,
                        use_distributed_sampler=False, num_sanity_val_steps=0, gradient_clip_val=5.0,
                        default_root_dir=exp)
    dm = SpeechDataModule(data_dir, data_dir, encode=encode, max_seconds=3.0)
    last = exp / "checkpoints" / "last.ckpt"
    trainer.fit(task, dm, ckpt_path=last if last.exists() else None)
    return task


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else None)
