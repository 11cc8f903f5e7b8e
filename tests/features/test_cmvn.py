"""Global CMVN: stats against numpy on the real frames, ESPnet's file format, the module."""

import numpy as np
import pytest
import torch

from speechlm.features import CMVNStats, GlobalCMVN


def padded_batch(seed=0, batch=4, max_len=30, dim=5):
    """feats (B, T, D) with distinct per-dim mean/scale, garbage in the padding, and the
    concatenated real frames (N, D) as a numpy reference."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=generator)
    lengths[0] = max_len
    feats = torch.randn(batch, max_len, dim, generator=generator, dtype=torch.float64)
    feats = feats * torch.arange(1, dim + 1) + 10 * torch.arange(dim)
    real = torch.arange(max_len) < lengths.unsqueeze(1)
    frames = feats[real].numpy().copy()
    feats[~real] = 1e6  # any leak of padding into the stats would show
    return feats.float(), lengths, frames


def test_stats_match_numpy_on_real_frames_only():
    feats, lengths, frames = padded_batch()
    stats = CMVNStats.zeros(5).accumulate(feats, lengths)
    assert stats.count == frames.shape[0]
    np.testing.assert_allclose(stats.mean(), frames.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std(), frames.std(0), rtol=1e-5)


def test_merge_equals_accumulating_everything():
    (a, la, fa), (b, lb, fb) = padded_batch(seed=1), padded_batch(seed=2, max_len=20)
    merged = CMVNStats.zeros(5).accumulate(a, la) + CMVNStats.zeros(5).accumulate(b, lb)
    everything = np.concatenate([fa, fb])
    assert merged.count == everything.shape[0]
    np.testing.assert_allclose(merged.mean(), everything.mean(0), rtol=1e-6)
    np.testing.assert_allclose(merged.std(), everything.std(0), rtol=1e-5)
    with pytest.raises(ValueError):
        merged.merge(CMVNStats.zeros(3))


def test_save_writes_espnet_npz_and_round_trips(tmp_path):
    feats, lengths, _ = padded_batch()
    stats = CMVNStats.zeros(5).accumulate(feats, lengths)
    path = tmp_path / "asr_stats" / "feats_stats.npz"
    stats.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["feats_stats.npz"], "no temp file left"

    # The keys, shapes and dtypes ESPnet's collect_stats writes and GlobalMVN reads.
    with np.load(path) as raw:
        assert set(raw.files) == {"count", "sum", "sum_square"}
        assert raw["count"].shape == () and np.issubdtype(raw["count"].dtype, np.integer)
        assert raw["sum"].shape == raw["sum_square"].shape == (5,)
        assert raw["sum"].dtype == raw["sum_square"].dtype == np.float64

    loaded = CMVNStats.load(path)
    assert loaded.count == stats.count
    np.testing.assert_array_equal(loaded.sum, stats.sum)
    np.testing.assert_array_equal(loaded.sum_square, stats.sum_square)


def test_loads_espnet_written_npz(tmp_path):
    # As ESPnet's collect_stats writes it: a Python int count and float32 sums.
    frames = np.random.default_rng(0).normal(3.0, 2.0, size=(200, 4)).astype(np.float32)
    squares = (frames**2).sum(0)
    np.savez(tmp_path / "feats_stats.npz", count=len(frames), sum=frames.sum(0), sum_square=squares)
    cmvn = GlobalCMVN.from_stats_file(tmp_path / "feats_stats.npz")
    np.testing.assert_allclose(cmvn.mean.numpy(), frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(cmvn.std.numpy(), frames.std(0), rtol=1e-4)


def test_loads_kaldi_style_npy(tmp_path):
    frames = np.random.default_rng(1).normal(-1.0, 0.5, size=(100, 3))
    stats = np.stack([np.append(frames.sum(0), len(frames)), np.append((frames**2).sum(0), 0.0)])
    np.save(tmp_path / "cmvn.npy", stats)
    loaded = CMVNStats.load(tmp_path / "cmvn.npy")
    assert loaded.count == 100
    np.testing.assert_allclose(loaded.mean(), frames.mean(0))


def test_std_is_floored_for_constant_dims():
    stats = CMVNStats.zeros(2).accumulate(torch.ones(1, 10, 2))
    assert np.all(stats.std() == np.sqrt(1e-20))


def test_global_cmvn_normalises_real_frames_and_zeroes_padding():
    feats, lengths, frames = padded_batch()
    cmvn = GlobalCMVN.from_stats(CMVNStats.zeros(5).accumulate(feats, lengths))
    normalised, out_lengths = cmvn(feats, lengths)
    assert out_lengths is lengths
    real = torch.arange(feats.shape[1]) < lengths.unsqueeze(1)
    expected = (frames - frames.mean(0)) / frames.std(0)
    np.testing.assert_allclose(normalised[real].numpy(), expected, atol=1e-4)
    assert (normalised[~real] == 0).all()

    restored, _ = cmvn.inverse(normalised, lengths)
    torch.testing.assert_close(restored[real], feats[real], rtol=1e-5, atol=1e-4)
    assert (restored[~real] == 0).all()


def test_norm_flags_and_buffers_in_state_dict():
    mean, std = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])
    feats = torch.full((1, 3, 2), 5.0)
    assert torch.equal(GlobalCMVN(mean, std, norm_vars=False)(feats)[0], feats - mean)
    assert torch.equal(GlobalCMVN(mean, std, norm_means=False)(feats)[0], feats / std)

    state = GlobalCMVN(mean, std).state_dict()
    assert set(state) == {"mean", "std"}
    restored = GlobalCMVN(torch.zeros(2), torch.ones(2))
    restored.load_state_dict(state)
    assert torch.equal(restored.mean, mean) and torch.equal(restored.std, std)
    with pytest.raises(ValueError):
        GlobalCMVN(torch.zeros(2), torch.ones(3))
