"""SpecAugment: eval identity, padding untouched, mask sizes bounded, adaptivity, determinism."""

import pytest
import torch

from speechlm.features import SpecAugment

PADDING = 7.0  # a value no augmentation produces, to see whether padding was touched


def batch(lengths, num_bins=80, seed=0):
    """feats (B, T, F): ones on real frames, PADDING beyond each length; and (B,) lengths."""
    lengths = torch.tensor(lengths)
    feats = torch.ones(len(lengths), int(lengths.max()), num_bins)
    feats[torch.arange(feats.shape[1]) >= lengths.unsqueeze(1)] = PADDING
    return feats, lengths


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def masks_only(**options):
    return SpecAugment(time_warp_window=0, **options).train()


def test_eval_mode_is_identity():
    feats, lengths = batch([50, 30])
    augment = SpecAugment().eval()
    out, out_lengths = augment(feats, lengths)
    assert out is feats and out_lengths is lengths


@pytest.mark.parametrize("adaptive", [True, False])
def test_padding_untouched_and_shape_kept(adaptive):
    feats, lengths = batch([400, 123, 37, 5])
    augment = SpecAugment(adaptive_time_masks=adaptive, mask_value=-3.0).train()
    for seed in range(5):
        out, out_lengths = augment(feats, lengths, generator=seeded(seed))
        assert out.shape == feats.shape and torch.equal(out_lengths, lengths)
        padding = torch.arange(feats.shape[1]) >= lengths.unsqueeze(1)
        assert (out[padding] == PADDING).all()
        assert (out[~padding] != PADDING).all()


def test_masked_fraction_bounded_by_configured_maxima():
    lengths = [1000, 600, 250, 60]
    feats, lengths_t = batch(lengths)
    only_time = masks_only(num_freq_masks=0)
    only_freq = masks_only(max_time_masks=0, adaptive_time_masks=True)
    fixed_time = masks_only(
        num_freq_masks=0, adaptive_time_masks=False, num_time_masks=3, time_mask_width=15
    )
    for seed in range(10):
        out, _ = only_time(feats, lengths_t, generator=seeded(seed))
        for b, length in enumerate(lengths):
            masked_frames = (out[b, :length] == 0).all(dim=-1).sum().item()
            assert masked_frames <= min(20, int(0.04 * length)) * int(0.05 * length)
            assert (out[b, :length] == 0).any(dim=-1).sum() == masked_frames, "whole frames only"

        out, _ = only_freq(feats, lengths_t, generator=seeded(seed))
        masked_bins = (out[:, :1] == 0).squeeze(1).sum(dim=-1)  # (B,)
        assert (masked_bins <= 2 * 27).all()
        for b, length in enumerate(lengths):  # a frequency mask spans all real frames
            assert ((out[b, :length] == 0).sum(0) % length == 0).all()

        out, _ = fixed_time(feats, lengths_t, generator=seeded(seed))
        assert ((out == 0).all(dim=-1).sum(dim=-1) <= 3 * 15).all()


def test_adaptive_time_mask_count_and_width_grow_with_length():
    augment = SpecAugment()
    counts, widths = augment.time_mask_counts(torch.tensor([10, 25, 100, 400, 500, 2000]))
    assert counts.tolist() == [0, 1, 4, 16, 20, 20]
    assert widths.tolist() == [0, 1, 5, 20, 25, 100]

    # And in the masks drawn: longer utterances lose more frames, in proportion.
    feats, lengths = batch([100, 800], num_bins=4)
    only_time = masks_only(num_freq_masks=0)
    masked = torch.zeros(2)
    for seed in range(20):
        out, _ = only_time(feats, lengths, generator=seeded(seed))
        masked += (out[:, :, 0] == 0).sum(dim=-1)
    assert masked[1] > 4 * masked[0]


def test_seeded_generator_is_deterministic():
    feats, lengths = batch([300, 200, 90])
    feats = feats + torch.randn(feats.shape, generator=seeded(9))  # so that time warp shows
    augment = SpecAugment().train()
    first, _ = augment(feats, lengths, generator=seeded(1))
    again, _ = augment(feats, lengths, generator=seeded(1))
    other, _ = augment(feats, lengths, generator=seeded(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_time_warp_keeps_shape_and_padding_and_moves_frames():
    feats, lengths = batch([120, 64, 10, 8])
    feats = feats + torch.randn(feats.shape, generator=seeded(3))
    feats[torch.arange(feats.shape[1]) >= lengths.unsqueeze(1)] = PADDING
    augment = SpecAugment(time_warp_window=5)
    warped = augment.time_warp(feats, lengths, generator=seeded(0))
    assert warped.shape == feats.shape
    padding = torch.arange(feats.shape[1]) >= lengths.unsqueeze(1)
    assert (warped[padding] == PADDING).all()
    assert not torch.equal(warped[0, :120], feats[0, :120])
    assert torch.equal(warped[3], feats[3]), "8 frames are too few for W=5, as in ESPnet"


def test_time_warp_off_when_window_is_zero():
    feats, lengths = batch([120, 64])
    feats = feats + torch.randn(feats.shape, generator=seeded(4))
    augment = SpecAugment(time_warp_window=0, num_freq_masks=0, max_time_masks=0).train()
    out, _ = augment(feats, lengths, generator=seeded(0))
    assert torch.equal(out, feats)


def test_generator_on_cpu_with_lengths_default():
    feats = torch.ones(2, 50, 10)
    out, lengths = SpecAugment().train()(feats, generator=seeded(0))
    assert lengths.tolist() == [50, 50] and out.shape == feats.shape
