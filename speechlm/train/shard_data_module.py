"""Training from webdataset shards (speechlm.data.shards), streamed from a directory or an
fsspec URL: `conf/data/shards.yaml`,

    python -m speechlm.bin.train data=shards data.train_shards=shards/train data.valid_shards=data/dev

Each shard set is found by its index (`shards.json` in the directory or at the URL); the
validation set may be shards or a Kaldi data dir. Items are those of the data dir
(`SpeechDataModule`'s `tables`, `transforms`, `bad_utterances`); batching is planned per
(rank, worker) from the index (speechlm.data.shard_plan): every utterance once per epoch
across ranks and workers, equal batch counts on every rank (padding batches, which the
`Task` takes part in without training on anything), mid-epoch resume to the batch (the
training loader is Lightning-stateful, as `ResumableDataLoader`).

Workers are started afresh each epoch (not persistent): they take the epoch's plan and
resume point with them. A resume needs the same number of ranks and workers as the
interrupted run (the plan depends on them); the loader refuses otherwise.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from speechlm.data.shards import ShardIndex, ShardItems, ShardStream, collate_shard_batch, is_data_dir
from speechlm.train.data_module import SpeechDataModule


class ShardLoader(DataLoader):
    """A DataLoader over a `ShardStream`: `len()` is the rank's batch count of the epoch;
    the epoch comes from `current_epoch()` (the trainer's) when given, else `set_epoch`."""

    def __init__(self, stream: ShardStream, num_workers: int = 0, seed: int = 0,
                 current_epoch: Callable[[], int] | None = None):
        stream.workers = max(1, num_workers)
        super().__init__(stream, batch_size=None, collate_fn=collate_shard_batch, num_workers=num_workers,
                         generator=torch.Generator().manual_seed(seed))
        self.current_epoch = current_epoch
        self.yielded = 0  # batches handed out by the current iterator (counting a resume's skipped ones)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def _sync_epoch(self) -> None:
        if self.current_epoch is not None:
            self.dataset.set_epoch(self.current_epoch())

    def __len__(self) -> int:
        self._sync_epoch()
        return len(self.dataset)

    def __iter__(self):
        self._sync_epoch()
        self.dataset.plan()  # computed here once, then copied into the workers
        start = self.dataset.skip
        iterator = super().__iter__()
        self.dataset.resume(0)  # the resume point applies to this iterator only
        self.yielded = start
        return self._counted(iterator)

    def _counted(self, iterator):
        for batch in iterator:
            self.yielded += 1
            yield batch


class ResumableShardLoader(ShardLoader):
    """A training `ShardLoader` that Lightning checkpoints (`state_dict`/`load_state_dict`):
    the epoch and the batches finished in it (`batches_done()`, the trainer's count, as
    workers prefetch; without it the batches this loader handed out)."""

    def __init__(self, *args, batches_done: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        stream = self.dataset
        done = self.batches_done() if self.batches_done is not None else self.yielded
        return {"epoch": int(stream.epoch), "batches_consumed": int(done),
                "world_size": stream.world_size, "workers": stream.workers}

    def load_state_dict(self, state: dict[str, int]) -> None:
        stream = self.dataset
        saved = (state.get("world_size", stream.world_size), state.get("workers", stream.workers))
        if saved != (stream.world_size, stream.workers):
            raise ValueError(f"the checkpoint was written with {saved[0]} rank(s) x {saved[1]} data worker(s), "
                             f"this run has {stream.world_size} x {stream.workers}: the epoch's batches depend on "
                             "both; resume with the same trainer.devices/num_nodes and data.num_workers")
        stream.set_epoch(int(state["epoch"]))
        stream.resume(int(state["batches_consumed"]))


class ShardDataModule(SpeechDataModule):
    """`train_shards` / `valid_shards`: a directory or URL of shards (or its shards.json),
    or, for either, a Kaldi data dir. `buffer_size`: utterances in each worker's bucketing
    shuffle buffer (memory: about that many utterances' encoded audio per worker). Other
    arguments as `SpeechDataModule`."""

    def __init__(self, train_shards: str, valid_shards: str, buffer_size: int = 1000, **kwargs):
        super().__init__(train_dir=train_shards, valid_dir=valid_shards, **kwargs)
        self.buffer_size = buffer_size

    def dataset(self, where: str | Path):
        if is_data_dir(where):
            return super().dataset(where)
        return ShardItems(ShardIndex.load(where), self.sample_rate, self.encode, self.tables, self.transforms,
                          seed=self.seed, bad_utterances=self.bad_utterances, silence_dbfs=self.silence_dbfs)

    def stream(self, items: ShardItems, max_seconds: float, shuffle: bool, rank: int = 0,
               world_size: int = 1) -> ShardStream:
        return ShardStream(items, max_seconds, num_buckets=self.num_buckets, max_batch_size=self.max_batch_size,
                           buffer_size=self.buffer_size, shuffle=shuffle, seed=self.seed, rank=rank,
                           world_size=world_size)

    def _loader(self, dataset, max_seconds: float, shuffle: bool) -> DataLoader:
        if not isinstance(dataset, ShardItems):
            return super()._loader(dataset, max_seconds, shuffle)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        stream = self.stream(dataset, max_seconds, shuffle, rank, world)
        if not shuffle:
            return ShardLoader(stream, self.num_workers, seed=self.seed)
        epoch = (lambda: trainer.current_epoch) if trainer is not None else None
        return ResumableShardLoader(stream, self.num_workers, seed=self.seed, current_epoch=epoch,
                                    batches_done=self.batches_done())
