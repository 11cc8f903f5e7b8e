"""The DataModule: Kaldi data dirs -> duration-bucketed, padded batches. Built from config
(conf/data/*.yaml, `_target_`): what an item holds is `tables` (per-utterance tables of the
data dir, e.g. {"lang": "utt2lang", "km": "km"}) and `transforms` (name -> callable
item -> item, e.g. tokenizing the transcript); a data dir without `text` and no tokenizing
transform gives audio-only batches (pretraining).

Each rank builds its sampler after the process group exists (in `setup`), so every rank
gets a disjoint shard with the same number of batches; Lightning must not swap in its own
DistributedSampler (`Trainer(use_distributed_sampler=False)`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from speechlm.data.collate import collate_audio
from speechlm.data.dataset import AudioDataset
from speechlm.data.sampler import DurationBucketSampler


class SpeechDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_dir: str | Path,
        valid_dir: str | Path,
        encode: Callable[[str], list[int]] | None = None,
        sample_rate: int = 16000,
        max_seconds: float = 200.0,
        valid_max_seconds: float | None = None,
        num_buckets: int = 10,
        max_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        tables: Mapping[str, str] | None = None,
        transforms: Mapping[str, Callable[[dict], dict]] | None = None,
    ):
        super().__init__()
        self.train_dir, self.valid_dir = train_dir, valid_dir
        self.encode = encode
        self.tables = dict(tables or {})
        self.transforms = [t for t in (transforms or {}).values() if t is not None]
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.valid_max_seconds = valid_max_seconds or max_seconds
        self.num_buckets = num_buckets
        self.max_batch_size = max_batch_size
        self.num_workers = num_workers
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.valid_set = (
            AudioDataset(d, self.sample_rate, self.encode, self.tables, self.transforms)
            for d in (self.train_dir, self.valid_dir))

    def _loader(self, dataset: AudioDataset, max_seconds: float, shuffle: bool) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else None
        world = self.trainer.world_size if self.trainer else None
        sampler = DurationBucketSampler(dataset.durations, max_seconds, num_buckets=self.num_buckets,
                                        max_batch_size=self.max_batch_size, shuffle=shuffle, seed=self.seed,
                                        rank=rank, world_size=world)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_audio, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.max_seconds, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_set, self.valid_max_seconds, shuffle=False)
