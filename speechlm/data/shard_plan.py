"""An epoch of sharded data, planned from the shard index alone (no audio read).

Streaming data cannot be indexed at random, so what a `DurationBucketSampler` decides up
front (which utterances go together, on which rank) is decided here as a pure function of
the index (each shard's utterance ids and durations) and (seed, epoch):

1. the shards are put in an order shuffled by (seed, epoch) and dealt to *slots*, one per
   (rank, DataLoader worker): each to the least-loaded rank (in seconds), then to that
   rank's least-loaded worker, so ranks get similar amounts of audio;
2. each slot's batches are what a shuffle buffer with duration buckets (lhotse's "dynamic
   bucketing") makes of the slot's utterances in reading order: a buffer of `buffer_size`
   utterances sorted into duration buckets; a batch is drawn from a random bucket holding
   more than a batch's worth, under the padded-seconds budget `len(batch) * max(dur) <=
   max_seconds` of `speechlm.data.sampler.DurationBucketSampler`; the buffer is refilled
   from the stream; at the end the buckets are drained;
3. ranks short of batches get padding batches (`[]`) so every rank has as many as the
   longest (DDP hangs on a missing all-reduce); real utterances are still used once.

Because every process can compute every slot's plan, a rank knows the other ranks' batch
counts, and a resumed run knows which batches were consumed. A DataLoader with W workers
yields its workers' batches round-robin, skipping exhausted workers (`rank_order`); a
resumed loader skips each worker's consumed batches and rotates which worker serves which
slot so that the remaining batches come in the uninterrupted run's order (`resume_split`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Batch = list[str]  # utterance ids; [] is a padding batch


@dataclass(frozen=True)
class SlotPlan:
    """One (rank, worker) slot's epoch: the shards it reads, in order, and its batches in
    the order it yields them (padding batches, `[]`, last)."""

    shards: list[int]
    batches: list[Batch]


def bucket_edges(durations: Sequence[float], num_buckets: int) -> np.ndarray:
    """(num_buckets - 1,) duration quantiles splitting all utterances into equal-count buckets."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    if len(durations) == 0 or num_buckets == 1:
        return np.zeros(0)
    return np.quantile(np.asarray(durations, dtype=np.float64), np.linspace(0, 1, num_buckets + 1)[1:-1])


class _Budget:
    def __init__(self, max_seconds: float, max_batch_size: int | None):
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        self.max_seconds, self.max_batch_size = float(max_seconds), max_batch_size

    def fits(self, size: int, longest: float) -> bool:
        if self.max_batch_size is not None and size > self.max_batch_size:
            return False
        return size * longest <= self.max_seconds

    def more_than_a_batch(self, size: int, seconds: float) -> bool:
        # size * max >= total seconds: a bucket whose total exceeds the budget cannot go in one batch
        return seconds > self.max_seconds or (self.max_batch_size is not None and size > self.max_batch_size)


def bucketed_batches(stream: Sequence[tuple[str, float]], edges: np.ndarray, budget: _Budget,
                     buffer_size: int, rng: np.random.Generator | None) -> list[Batch]:
    """Batches of a stream of (id, seconds) through a bucketing shuffle buffer. With `rng`
    None nothing is random: the lowest ready bucket goes first, in arrival order."""
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    buckets: list[list[tuple[str, float]]] = [[] for _ in range(len(edges) + 1)]
    seconds = [0.0] * len(buckets)
    held, pos, batches = 0, 0, []
    while pos < len(stream) or held:
        while held < buffer_size and pos < len(stream):
            utt, dur = stream[pos]
            b = int(np.searchsorted(edges, dur, side="right"))
            buckets[b].append((utt, dur))
            seconds[b] += dur
            held, pos = held + 1, pos + 1
        ready = [b for b, items in enumerate(buckets) if budget.more_than_a_batch(len(items), seconds[b])]
        if not ready:  # the stream is drained, or the buffer is too small to fill a batch: take what there is
            ready = [b for b, items in enumerate(buckets) if items]
            if pos < len(stream):
                ready = [max(ready, key=lambda b: seconds[b])]
        b = ready[0] if rng is None else ready[int(rng.integers(len(ready)))]
        items = buckets[b]
        order = range(len(items)) if rng is None else rng.permutation(len(items)).tolist()
        taken, longest = [], 0.0
        for k in order:  # greedy: stop at the first utterance that does not fit (an overlong one goes alone)
            if taken and not budget.fits(len(taken) + 1, max(longest, items[k][1])):
                break
            taken.append(k)
            longest = max(longest, items[k][1])
        chosen = set(taken)
        batches.append([items[k][0] for k in taken])
        seconds[b] -= sum(items[k][1] for k in taken)
        buckets[b] = [item for k, item in enumerate(items) if k not in chosen]
        held -= len(taken)
    return batches


def deal_shards(shard_seconds: Sequence[float], order: Sequence[int], world_size: int,
                num_workers: int) -> list[list[int]]:
    """Shards to slots (slot = rank * num_workers + worker), in `order`: each to the
    least-loaded rank, then to that rank's least-loaded worker (ties: the lowest)."""
    rank_load = [0.0] * world_size
    worker_load = [[0.0] * num_workers for _ in range(world_size)]
    slots: list[list[int]] = [[] for _ in range(world_size * num_workers)]
    for s in order:
        r = min(range(world_size), key=lambda k: rank_load[k])
        w = min(range(num_workers), key=lambda k: worker_load[r][k])
        slots[r * num_workers + w].append(s)
        rank_load[r] += shard_seconds[s]
        worker_load[r][w] += shard_seconds[s]
    return slots


def plan_epoch(shards: Sequence[tuple[Sequence[str], Sequence[float]]], *, epoch: int, seed: int, world_size: int,
               num_workers: int, max_seconds: float, num_buckets: int = 10, max_batch_size: int | None = None,
               buffer_size: int = 1000, shuffle: bool = True) -> list[SlotPlan]:
    """Every slot's plan for `epoch` (`shards`: per shard its (ids, durations), index order).
    Without `shuffle` the plan is the same every epoch: shards in index order, no random draw."""
    num_workers = max(1, num_workers)
    budget = _Budget(max_seconds, max_batch_size)
    edges = bucket_edges([d for _, durs in shards for d in durs], num_buckets)
    order = np.random.default_rng([seed, epoch]).permutation(len(shards)).tolist() if shuffle else range(len(shards))
    dealt = deal_shards([float(sum(durs)) for _, durs in shards], order, world_size, num_workers)
    plans = []
    for slot, shard_ids in enumerate(dealt):
        stream = [item for s in shard_ids for item in zip(shards[s][0], shards[s][1])]
        rng = np.random.default_rng([seed, epoch, slot]) if shuffle else None
        plans.append(SlotPlan(shard_ids, bucketed_batches(stream, edges, budget, buffer_size, rng)))
    return _pad_ranks(plans, world_size, num_workers)


def _pad_ranks(plans: list[SlotPlan], world_size: int, num_workers: int) -> list[SlotPlan]:
    """Padding batches so that every rank has as many batches as the longest, each added to
    the rank's worker with the fewest (the round-robin order then stays interleaved)."""
    ranks = [plans[r * num_workers:(r + 1) * num_workers] for r in range(world_size)]
    target = max(sum(len(p.batches) for p in rank) for rank in ranks)
    for rank in ranks:
        for _ in range(target - sum(len(p.batches) for p in rank)):
            min(rank, key=lambda p: len(p.batches)).batches.append([])
    return plans


def rank_order(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """(worker, batch position) in the order a DataLoader yields them: round-robin over the
    workers, skipping a worker once it is exhausted (torch's in-order iterable loading)."""
    return [(w, r) for r in range(max(lengths, default=0)) for w, n in enumerate(lengths) if r < n]


def resume_split(lengths: Sequence[int], consumed: int) -> tuple[list[int], int]:
    """After `consumed` batches of a rank's epoch: (batches each worker has given, rotation).
    A fresh loader whose worker i serves slot worker (i + rotation) % W and skips the given
    batches yields exactly the rest of the uninterrupted order: the rest of the interrupted
    round first (workers after the last one served), then whole rounds in worker order."""
    order = rank_order(lengths)
    if not 0 <= consumed <= len(order):
        raise ValueError(f"{consumed} batches consumed, but the epoch has {len(order)} on this rank")
    given = [0] * len(lengths)
    for w, _ in order[:consumed]:
        given[w] += 1
    rotation = (order[consumed - 1][0] + 1) % len(lengths) if consumed else 0
    return given, rotation
