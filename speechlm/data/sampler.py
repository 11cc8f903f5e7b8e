"""Duration-bucket batch sampler: batches of similar-length utterances, sharded for DDP.

Speech utterances range from under a second to tens of seconds. Random batches of a
fixed size waste most of their compute on padding and their memory use swings with the
longest utterance drawn. Instead, utterances are grouped into buckets of similar duration
and packed so that each batch's *padded* cost, ``len(batch) * max(duration)``, stays under
a budget in seconds: memory use is nearly constant and little is padding.

Use it as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_audio)``.
Under Lightning DDP, pass ``Trainer(use_distributed_sampler=False)``: this sampler already
shards, and Lightning cannot wrap a custom batch sampler in a ``DistributedSampler``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

Batch = list[int]


def padded_cost(batch: Sequence[int], durations: np.ndarray) -> float:
    """Seconds of audio the model processes for ``batch`` once padded: ``B * max(dur)``."""
    return len(batch) * float(durations[list(batch)].max())


def padding_efficiency(batches: Sequence[Sequence[int]], durations: Sequence[float]) -> float:
    """Fraction of the padded compute that is real audio: ``sum(dur) / sum(padded cost)``.

    1.0 means no padding at all; random batching of varied lengths is typically 0.5-0.7.
    """
    durations = np.asarray(durations, dtype=np.float64)
    real = sum(float(durations[list(b)].sum()) for b in batches)
    padded = sum(padded_cost(b, durations) for b in batches)
    return real / padded if padded > 0 else 1.0


def _default_rank_and_world_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class DurationBucketSampler:
    """Yields this rank's batches (lists of dataset indices) for the current epoch.

    Args:
        durations: (N,) duration in seconds of each utterance, indexed like the dataset.
        max_seconds: budget per batch for ``len(batch) * max(duration in batch)``. An
            utterance longer than this forms a batch on its own (it is never dropped).
        num_buckets: utterances are split into this many duration quantiles; batches
            never mix buckets.
        max_batch_size: optional cap on utterances per batch (e.g. for decoder memory,
            which grows with the number of sequences rather than with seconds).
        shuffle: shuffle utterances within buckets and the order of batches. If False,
            batches are packed in sorted-duration order, shortest first, every epoch.
        seed: with ``set_epoch``, fully determines the batches: every process that
            builds this sampler with the same arguments gets the same global batch list.
        tag_epoch: yield ``(index, epoch)`` pairs instead of bare indices, so that a
            dataset can seed each item's random choices by (seed, epoch, index) and a
            resumed run draws the same ones whatever its workers did
            (``speechlm.data.dataset.AudioDataset``).
        rank, world_size: DDP shard of this process; default to ``torch.distributed``'s
            values if a process group is initialised (so construct the sampler after
            that, e.g. in ``LightningDataModule.setup``), else 0 and 1.

    Every rank gets the same number of batches (DDP would hang on a missing all-reduce
    otherwise) and every utterance is used exactly once per epoch across ranks.

    ``len(sampler)`` may differ slightly between epochs: greedy packing of a differently
    shuffled bucket can need one batch more or less. It is computed from the same cached
    batch list that ``__iter__`` yields, so it always matches the current epoch.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_seconds: float,
        num_buckets: int = 10,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        tag_epoch: bool = False,
    ) -> None:
        self.durations = np.asarray(durations, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(self.durations)) or np.any(self.durations < 0):
            raise ValueError("durations must be finite and non-negative")
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")

        default_rank, default_world_size = _default_rank_and_world_size()
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world_size if world_size is None else world_size
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}"
            )
        if len(self.durations) < self.world_size:
            raise ValueError(
                f"{len(self.durations)} utterances cannot be shared among {self.world_size} ranks: "
                "every rank needs at least one batch and no utterance may be duplicated"
            )

        self.max_seconds = float(max_seconds)
        self.num_buckets = num_buckets
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.tag_epoch = tag_epoch

        self.num_overlong = int(np.sum(self.durations > self.max_seconds))
        if self.num_overlong:
            logger.warning(
                "%d of %d utterances are longer than max_seconds=%g; each goes in a batch of its own",
                self.num_overlong, len(self.durations), self.max_seconds,
            )

        # Stable sort, so equal durations keep dataset order and buckets are reproducible.
        sorted_indices = np.argsort(self.durations, kind="stable")
        self._buckets = [b for b in np.array_split(sorted_indices, num_buckets) if len(b)]

        self.epoch = 0
        self._skip = 0  # batches to skip on the next __iter__ (mid-epoch resume)
        self._consumed = 0  # batches of the current epoch handed out so far
        self._cache: tuple[int, list[Batch]] | None = None  # (epoch, global batches)

    # ------------------------------------------------------------------ epochs
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (Lightning/DDP convention)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._skip = 0
            self._consumed = 0

    @property
    def sampler(self) -> DurationBucketSampler:
        """Lightning calls ``dataloader.batch_sampler.sampler.set_epoch(epoch)`` each epoch
        (``lightning.fabric.utilities.data._set_sampler_epoch``); this makes that reach us."""
        return self

    # ----------------------------------------------------------------- batches
    def global_batches(self) -> list[Batch]:
        """All ranks' batches for the current epoch, in dealing order (batch j -> rank j % W)."""
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._build_global_batches(self.epoch))
        return self._cache[1]

    def rank_batches(self) -> list[Batch]:
        """This rank's batches for the current epoch (the whole epoch, ignoring resume)."""
        return self.global_batches()[self.rank :: self.world_size]

    def _build_global_batches(self, epoch: int) -> list[Batch]:
        # A local generator seeded by (seed, epoch): identical in every process, and
        # independent of whatever else consumed the global RNG.
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[Batch] = []
        for bucket in self._buckets:
            order = rng.permutation(bucket) if self.shuffle else bucket
            batches.extend(self._pack(order))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return self._make_divisible(batches)

    def _fits(self, size: int, max_duration: float) -> bool:
        if self.max_batch_size is not None and size > self.max_batch_size:
            return False
        return size * max_duration <= self.max_seconds

    def _pack(self, indices: np.ndarray) -> list[Batch]:
        """Greedily pack ``indices`` in order into batches within the budget."""
        batches: list[Batch] = []
        current: Batch = []
        current_max = 0.0
        for index in indices.tolist():
            duration = float(self.durations[index])
            new_max = max(current_max, duration)
            if current and not self._fits(len(current) + 1, new_max):
                batches.append(current)
                current, new_max = [], duration
            current.append(index)  # an overlong utterance lands alone: nothing fits after it
            current_max = new_max
        if current:
            batches.append(current)
        return batches

    def _make_divisible(self, batches: list[Batch]) -> list[Batch]:
        """Change the batch count to a multiple of world_size without dropping or duplicating.

        Splitting a batch keeps both halves within bounds (a subset never costs more), so
        split while possible. Only when (nearly) every batch is a single utterance can the
        count exceed the largest usable multiple; then merge pairs that fit together.
        """
        w = self.world_size
        if len(batches) % w == 0:
            return batches
        n = len(self.durations)
        batches = list(batches)
        if -(-len(batches) // w) * w <= n:
            while len(batches) % w:
                # Largest batch first: its halves are the most likely to still be sizeable.
                j = max(range(len(batches)), key=lambda k: len(batches[k]))
                half = len(batches[j]) // 2
                batches[j : j + 1] = [batches[j][:half], batches[j][half:]]
            return batches
        for _ in range(len(batches) % w):
            pair = self._find_mergeable_pair(batches)
            if pair is None:
                raise ValueError(
                    f"cannot give {w} ranks equal numbers of batches: {len(batches)} batches of "
                    f"{n} utterances, and no two batches fit together within max_seconds="
                    f"{self.max_seconds:g}, max_batch_size={self.max_batch_size}. Raise those limits, "
                    "or use a number of utterances divisible by the number of ranks."
                )
            i, j = pair
            batches[i] = batches[i] + batches[j]
            del batches[j]
        return batches

    def _find_mergeable_pair(self, batches: list[Batch]) -> tuple[int, int] | None:
        maxes = [float(self.durations[b].max()) for b in batches]
        by_max = sorted(range(len(batches)), key=lambda k: maxes[k])
        for a, i in enumerate(by_max):
            if 2 * maxes[i] > self.max_seconds:
                break  # every later pair costs at least 2 * maxes[i]
            for j in by_max[a + 1 :]:
                if 2 * maxes[j] > self.max_seconds:
                    break
                if self._fits(len(batches[i]) + len(batches[j]), maxes[j]):
                    return min(i, j), max(i, j)
        return None

    # --------------------------------------------------------------- protocol
    def __iter__(self) -> Iterator[Batch]:
        batches = self.rank_batches()
        start, self._skip = self._skip, 0
        self._consumed = start
        for batch in batches[start:]:
            self._consumed += 1
            # a copy: callers may mutate what they get
            yield [(i, self.epoch) for i in batch] if self.tag_epoch else list(batch)

    def __len__(self) -> int:
        """Number of batches the next ``__iter__`` yields (fewer after a mid-epoch resume)."""
        return len(self.rank_batches()) - self._skip

    def padding_efficiency(self) -> float:
        """``sum(dur) / sum(padded cost)`` over all ranks' batches of the current epoch."""
        return padding_efficiency(self.global_batches(), self.durations)

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, int]:
        """Epoch and batches handed out so far in it.

        With ``num_workers > 0`` the DataLoader prefetches, so this counts ahead of the
        optimizer steps taken; for an exact resume pass the trainer's own count of
        finished batches as ``batches_consumed``.
        """
        return {"epoch": int(self.epoch), "batches_consumed": int(self._consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next ``__iter__`` continues ``state['epoch']`` after the consumed batches."""
        self.set_epoch(int(state["epoch"]))
        self._skip = int(state["batches_consumed"])
        self._consumed = self._skip
