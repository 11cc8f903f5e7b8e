"""The DataModule: Kaldi data dirs -> duration-bucketed, padded batches. Built from config
(conf/data/*.yaml, `_target_`): what an item holds is `tables` (per-utterance tables of the
data dir, e.g. {"lang": "utt2lang", "km": "km"}) and `transforms` (name -> callable
item -> item, e.g. tokenizing the transcript); a data dir without `text` and no tokenizing
transform gives audio-only batches (pretraining).

Each rank builds its sampler after the process group exists (in `setup`), so every rank
gets a disjoint shard with the same number of batches; Lightning must not swap in its own
DistributedSampler (`Trainer(use_distributed_sampler=False)`).

Mid-epoch resume: the training loader is a `ResumableDataLoader`, which Lightning saves in
every checkpoint (its sampler's epoch and the batches the trainer has finished) and
restores, so a run resumed from a checkpoint written mid-epoch trains on the epoch's
remaining batches, in order.

Bad utterances (`bad_utterances`: skip | error; `speechlm.data.dataset.AudioDataset`):
unreadable, zero-length, all-silent or truncated audio, transcripts of no or only unknown
tokens. With skip they are left out of their batch, and the trainer counts them and lists
them (id, reason) in the exp dir's `bad_utterances`; with error, training stops naming
the first. Items' random choices (e.g. a multitask transform's prompt
options) are seeded by (seed, epoch, index) rather than drawn from a worker's stream, and
the loaders draw their workers' base seeds from a generator of their own, not from torch's
global one: a resumed run then trains on the same batches with the same dropout as an
uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from speechlm.data.collate import collate_audio
from speechlm.data.dataset import AudioDataset
from speechlm.data.sampler import DurationBucketSampler


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `DurationBucketSampler` that Lightning checkpoints
    (`state_dict`/`load_state_dict` make it `_Stateful` to Lightning's fit loop).
    `batches_done()` gives the trainer's count of finished batches in the epoch (workers
    prefetch, so the sampler's own count runs ahead). `len()` is the whole epoch's batch
    count even after a resume: Lightning counts the batches already done itself."""

    def __init__(self, *args, batches_done: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def __len__(self) -> int:
        return len(self.batch_sampler.rank_batches())

    def state_dict(self) -> dict[str, int]:
        state = self.batch_sampler.state_dict()
        if self.batches_done is not None:
            state["batches_consumed"] = int(self.batches_done())
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)



def bucketed_loader(dataset, lengths, budget: float, collate_fn: Callable, module: L.LightningDataModule,
                    shuffle: bool, tag_epoch: bool = False) -> ResumableDataLoader:
    """`dataset`'s loader over a `DurationBucketSampler` of `lengths` (seconds, tokens, ...)
    under `budget` per padded batch, with `module`'s bucketing, seed and workers, sharded
    over the trainer's ranks; the training loader (`shuffle`) is resumable mid-epoch."""
    trainer = module.trainer
    sampler = DurationBucketSampler(lengths, budget, num_buckets=module.num_buckets,
                                    max_batch_size=module.max_batch_size, shuffle=shuffle, seed=module.seed,
                                    rank=trainer.global_rank if trainer else None,
                                    world_size=trainer.world_size if trainer else None, tag_epoch=tag_epoch)
    done = None
    if shuffle and trainer is not None:
        done = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed  # noqa: E731
    return ResumableDataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn,
                               num_workers=module.num_workers, persistent_workers=module.num_workers > 0,
                               generator=torch.Generator().manual_seed(module.seed), batches_done=done)


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
        bad_utterances: str = "skip",
        silence_dbfs: float = -70.0,
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
        self.bad_utterances, self.silence_dbfs = bad_utterances, silence_dbfs

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.valid_set = self.dataset(self.train_dir), self.dataset(self.valid_dir)

    def dataset(self, data_dir: str | Path) -> AudioDataset:
        """The items of a data dir, with this module's item options."""
        return AudioDataset(data_dir, self.sample_rate, self.encode, self.tables, self.transforms, seed=self.seed,
                            bad_utterances=self.bad_utterances, silence_dbfs=self.silence_dbfs)

    def batches_done(self) -> Callable[[], int] | None:
        """The trainer's count of finished batches in the epoch (what a resume skips)."""
        if self.trainer is None:
            return None
        trainer = self.trainer
        return lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _loader(self, dataset: AudioDataset, max_seconds: float, shuffle: bool) -> DataLoader:
        return bucketed_loader(dataset, dataset.durations, max_seconds, collate_audio, self, shuffle, tag_epoch=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.max_seconds, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_set, self.valid_max_seconds, shuffle=False)
