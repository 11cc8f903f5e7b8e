"""Epochs of different lengths (DurationBucketSampler's greedy packing of a reshuffled order
may give one batch more or less): every epoch must validate once, at its end, and train on
all of its batches. Lightning alone counts the batches of the first epoch only."""
from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from speechlm.train.task import Task

LENGTHS = (5, 4, 6, 4, 5)  # batches per epoch


class EpochSampler:
    """A batch sampler of LENGTHS[epoch] one-item batches, epoch set by Lightning."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return LENGTHS[self.epoch]

    def __iter__(self):
        return iter([[i] for i in range(len(self))])

    @property
    def sampler(self):  # where Lightning looks for set_epoch
        return self


def collate(items):
    return {"x": torch.stack(items), "audio_lens": torch.ones(len(items), dtype=torch.long)}


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(1, 1)

    def forward(self, batch):
        return {"loss": (self.w(batch["x"]) ** 2).mean()}


class Count(L.Callback):
    def __init__(self):
        self.trained: dict[int, int] = {}
        self.validated: list[tuple[int, int]] = []  # (epoch, batches trained in it so far)

    def on_train_batch_end(self, trainer, *args):
        self.trained[trainer.current_epoch] = self.trained.get(trainer.current_epoch, 0) + 1

    def on_validation_end(self, trainer, *args):
        self.validated.append((trainer.current_epoch, self.trained.get(trainer.current_epoch, 0)))


@pytest.mark.parametrize("val_check_interval", [1.0, 0.5])
def test_every_epoch_trains_all_batches_and_validates(tmp_path, val_check_interval):
    data = torch.ones(10, 1)
    count = Count()
    trainer = L.Trainer(max_epochs=len(LENGTHS), accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[count],
                        use_distributed_sampler=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                        val_check_interval=val_check_interval)
    task = Task(Linear(), partial(torch.optim.SGD, lr=0.1))
    trainer.fit(task, DataLoader(data, batch_sampler=EpochSampler(), collate_fn=collate),
                DataLoader(data[:2], batch_size=1, collate_fn=collate))
    assert count.trained == dict(enumerate(LENGTHS))
    if val_check_interval == 1.0:
        assert count.validated == list(enumerate(LENGTHS))
    else:  # Lightning's rule (after every int(n * 0.5) batches), with n this epoch's count
        expected = [(e, m) for e, n in enumerate(LENGTHS) for m in range(int(n * 0.5), n + 1, int(n * 0.5))]
        assert count.validated == expected
