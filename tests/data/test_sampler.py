"""DurationBucketSampler: exactly-once coverage across ranks, bounds, determinism, padding."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import torch

from speechlm.data.collate import collate_audio
from speechlm.data.sampler import DurationBucketSampler, padded_cost, padding_efficiency


def make_ranks(durations, world_size, epoch=0, **kwargs):
    """One sampler per simulated rank, all at ``epoch``."""
    samplers = [
        DurationBucketSampler(durations, rank=r, world_size=world_size, **kwargs) for r in range(world_size)
    ]
    for s in samplers:
        s.set_epoch(epoch)
    return samplers


def assert_exact_partition(durations, samplers):
    """Every utterance once across ranks, equal batch counts, len() == iteration."""
    per_rank = [list(s) for s in samplers]
    counts = {len(b) for b in per_rank}
    assert len(counts) == 1, f"unequal batch counts per rank: {[len(b) for b in per_rank]}"
    assert [len(s) for s in samplers] == [len(b) for b in per_rank]
    used = Counter(i for batches in per_rank for batch in batches for i in batch)
    assert sorted(used) == list(range(len(durations))), "some utterance missing or unknown index"
    assert set(used.values()) == {1}, "some utterance used more than once"
    assert all(len(batch) > 0 for batches in per_rank for batch in batches)
    return per_rank


def assert_within_bounds(durations, batches, max_seconds, max_batch_size=None):
    durations = np.asarray(durations, dtype=np.float64)
    for batch in batches:
        if max_batch_size is not None:
            assert len(batch) <= max_batch_size
        if len(batch) > 1:  # only a lone (overlong) utterance may exceed the budget
            assert padded_cost(batch, durations) <= max_seconds, batch


def random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 300))
    kind = seed % 3
    if kind == 0:
        durations = rng.uniform(0.5, 20.0, n)
    elif kind == 1:
        durations = rng.lognormal(1.5, 0.6, n)
    else:
        durations = rng.choice([1.0, 2.5, 7.0], n)  # many ties
    kwargs = dict(
        max_seconds=float(rng.uniform(15.0, 120.0)),
        num_buckets=int(rng.integers(1, 15)),
        max_batch_size=None if rng.random() < 0.5 else int(rng.integers(2, 20)),
        seed=int(rng.integers(0, 1000)),
    )
    return durations.tolist(), kwargs


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("case_seed", range(12))
def test_random_duration_sets_partition_exactly_within_bounds(case_seed, world_size):
    durations, kwargs = random_case(case_seed)
    for epoch in (0, 1):
        samplers = make_ranks(durations, world_size, epoch=epoch, **kwargs)
        per_rank = assert_exact_partition(durations, samplers)
        flat = [b for bs in per_rank for b in bs]
        assert_within_bounds(durations, flat, kwargs["max_seconds"], kwargs["max_batch_size"])


@pytest.mark.parametrize("world_size", [2, 3])
def test_odd_batch_count_is_split_to_a_multiple_of_world_size(world_size):
    durations = [1.0] * 9  # 2 per batch -> 5 batches, a multiple of neither 2 nor 3
    samplers = make_ranks(durations, world_size, max_seconds=2.0, num_buckets=1, shuffle=False)
    unsplit = 5  # ceil(9 / 2) batches of at most 2
    assert unsplit % world_size != 0
    per_rank = assert_exact_partition(durations, samplers)
    assert len(per_rank[0]) * world_size == -(-unsplit // world_size) * world_size
    assert_within_bounds(durations, [b for bs in per_rank for b in bs], 2.0)


def test_all_equal_durations():
    durations = [3.0] * 50
    for world_size in (1, 2, 3):
        per_rank = assert_exact_partition(durations, make_ranks(durations, world_size, max_seconds=30.0))
        assert all(len(b) <= 10 for bs in per_rank for b in bs)


def test_overlong_utterance_is_kept_alone_counted_and_warned(caplog):
    durations = [2.0] * 20 + [100.0]
    with caplog.at_level(logging.WARNING, logger="speechlm.data.sampler"):
        samplers = make_ranks(durations, 2, max_seconds=10.0)
    assert samplers[0].num_overlong == 1
    assert any("1 of 21 utterances" in r.getMessage() for r in caplog.records)
    per_rank = assert_exact_partition(durations, samplers)
    assert [20] in [b for bs in per_rank for b in bs]
    assert_within_bounds(durations, [b for bs in per_rank for b in bs], 10.0)


def test_fewer_batches_than_ranks_splits_batches():
    durations = [1.0] * 6  # all fit in one batch
    for world_size in (2, 3, 4, 6):
        samplers = make_ranks(durations, world_size, max_seconds=100.0, num_buckets=1)
        per_rank = assert_exact_partition(durations, samplers)
        assert all(len(bs) == 1 for bs in per_rank)


def test_fewer_utterances_than_ranks_raises():
    with pytest.raises(ValueError, match="cannot be shared among 4 ranks"):
        DurationBucketSampler([1.0, 2.0, 3.0], max_seconds=10.0, rank=0, world_size=4)


def test_all_singletons_merge_when_two_fit_together():
    # One bucket per utterance: 5 singleton batches for 2 ranks; only the two 1 s fit together.
    durations = [6.0, 1.0, 6.0, 1.0, 6.0]
    samplers = make_ranks(durations, 2, max_seconds=7.0, num_buckets=5)
    per_rank = assert_exact_partition(durations, samplers)
    batches = [sorted(b) for bs in per_rank for b in bs]
    assert [1, 3] in batches and len(batches) == 4
    assert_within_bounds(durations, batches, 7.0)


def test_impossible_equal_split_raises():
    # Every utterance must be alone (max_batch_size=1): 5 batches cannot be split among 2 ranks.
    with pytest.raises(ValueError, match="equal numbers of batches"):
        sampler = DurationBucketSampler([1.0] * 5, max_seconds=10.0, max_batch_size=1, rank=0, world_size=2)
        sampler.global_batches()


def test_max_batch_size_is_respected():
    durations = np.random.default_rng(0).uniform(0.5, 1.0, 200).tolist()
    sampler = DurationBucketSampler(durations, max_seconds=1000.0, max_batch_size=8)
    assert all(len(b) <= 8 for b in sampler)
    assert sum(len(b) for b in sampler) == 200


def test_same_seed_and_epoch_is_identical_other_epoch_or_seed_differs():
    durations = np.random.default_rng(1).uniform(1.0, 15.0, 300).tolist()
    a = DurationBucketSampler(durations, max_seconds=60.0, seed=3)
    b = DurationBucketSampler(durations, max_seconds=60.0, seed=3)
    c = DurationBucketSampler(durations, max_seconds=60.0, seed=4)
    for s in (a, b, c):
        s.set_epoch(5)
    assert list(a) == list(b)
    assert list(a) != list(c)
    epoch5 = list(a)
    a.set_epoch(6)
    assert list(a) != epoch5
    a.set_epoch(5)
    assert list(a) == epoch5
    for epoch in range(4):
        a.set_epoch(epoch)
        assert len(a) == len(list(a))


def test_does_not_touch_global_rng_state():
    durations = np.random.default_rng(2).uniform(1.0, 15.0, 100).tolist()
    np.random.seed(0)
    torch.manual_seed(0)
    first = list(DurationBucketSampler(durations, max_seconds=40.0, seed=1))
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    np.random.seed(123)
    torch.manual_seed(123)
    second = list(DurationBucketSampler(durations, max_seconds=40.0, seed=1))
    assert first == second
    np.random.seed(0)
    torch.manual_seed(0)
    list(DurationBucketSampler(durations, max_seconds=40.0, seed=1))
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_no_shuffle_is_sorted_and_epoch_independent():
    durations = [5.0, 1.0, 3.0, 2.0, 4.0, 1.5]
    sampler = DurationBucketSampler(durations, max_seconds=6.0, num_buckets=2, shuffle=False)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == epoch0
    flat = [i for b in epoch0 for i in b]
    assert flat == sorted(range(6), key=lambda i: durations[i])


def test_rank_defaults_follow_torch_distributed(monkeypatch):
    assert DurationBucketSampler([1.0, 2.0], max_seconds=5.0).world_size == 1
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    sampler = DurationBucketSampler([1.0, 2.0, 3.0], max_seconds=5.0)
    assert (sampler.rank, sampler.world_size) == (1, 2)


def test_state_dict_resumes_mid_epoch_exactly():
    durations = np.random.default_rng(3).uniform(1.0, 10.0, 120).tolist()
    sampler = DurationBucketSampler(durations, max_seconds=30.0, seed=7, rank=1, world_size=2)
    sampler.set_epoch(2)
    full = list(sampler)
    iterator = iter(sampler)
    for _ in range(3):
        next(iterator)
    state = sampler.state_dict()
    assert state == {"epoch": 2, "batches_consumed": 3}
    assert all(type(v) is int for v in state.values())

    resumed = DurationBucketSampler(durations, max_seconds=30.0, seed=7, rank=1, world_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # Lightning calls this again at the start of the resumed epoch
    assert len(resumed) == len(full) - 3
    assert list(resumed) == full[3:]
    assert list(resumed) == full  # the next pass over the epoch is whole again


def test_padding_efficiency_of_known_batches():
    assert padding_efficiency([[0, 1]], [1.0, 2.0]) == pytest.approx(3.0 / 4.0)
    assert padding_efficiency([[0], [1]], [1.0, 2.0]) == pytest.approx(1.0)


def test_bucketing_reduces_padding_vs_random_batching():
    durations = np.random.default_rng(4).lognormal(1.5, 0.7, 2000).tolist()
    bucketed = DurationBucketSampler(durations, max_seconds=200.0, num_buckets=20, seed=0)
    random = DurationBucketSampler(durations, max_seconds=200.0, num_buckets=1, seed=0)
    assert bucketed.padding_efficiency() > 0.85
    assert bucketed.padding_efficiency() > random.padding_efficiency() + 0.15
    # and better than fixed-size random batches, the usual baseline
    perm = np.random.default_rng(0).permutation(len(durations)).tolist()
    fixed = [perm[i : i + 16] for i in range(0, len(perm), 16)]
    assert bucketed.padding_efficiency() > padding_efficiency(fixed, durations) + 0.15


class TinyAudioDataset(torch.utils.data.Dataset):
    def __init__(self, durations, sample_rate=100):
        self.items = [
            {
                "id": f"utt{i}",
                "audio": torch.randn(int(d * sample_rate)),
                "text": f"text {i}",
                "tokens": [i % 7] * (i % 4 + 1),
            }
            for i, d in enumerate(durations)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_works_as_dataloader_batch_sampler():
    durations = np.random.default_rng(5).uniform(0.5, 3.0, 40).tolist()
    dataset = TinyAudioDataset(durations)
    sampler = DurationBucketSampler(durations, max_seconds=8.0, num_buckets=4, rank=0, world_size=1)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_audio)
    assert len(loader) == len(sampler)
    seen = []
    for batch, indices in zip(loader, sampler.rank_batches(), strict=True):
        assert batch["ids"] == [f"utt{i}" for i in indices]  # collate keeps sampler order
        assert batch["audio"].shape == (len(indices), int(batch["audio_lens"].max()))
        assert batch["tokens"].shape[0] == len(indices)
        seen += batch["ids"]
    assert sorted(seen) == sorted(f"utt{i}" for i in range(40))


def test_lightning_set_epoch_reaches_the_batch_sampler():
    data = pytest.importorskip("lightning.fabric.utilities.data")
    sampler = DurationBucketSampler([1.0, 2.0, 3.0], max_seconds=5.0)
    dataset = TinyAudioDataset([1.0, 2.0, 3.0])
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_audio)
    data._set_sampler_epoch(loader, 3)
    assert sampler.epoch == 3


@pytest.mark.parametrize(
    "kwargs",
    [dict(max_seconds=0.0), dict(max_seconds=5.0, num_buckets=0), dict(max_seconds=5.0, max_batch_size=0),
     dict(max_seconds=5.0, rank=2, world_size=2)],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        DurationBucketSampler([1.0, 2.0, 3.0], **kwargs)


def test_negative_or_nan_durations_raise():
    for bad in ([1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="finite and non-negative"):
            DurationBucketSampler(bad, max_seconds=5.0)
