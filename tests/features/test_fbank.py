"""Batched `Fbank` against torchaudio's per-utterance Kaldi fbank (the peer)."""

import math

import pytest
import torch
from torchaudio.compliance.kaldi import fbank as torchaudio_fbank

from speechlm.features import Fbank
from speechlm.features.fbank import reflect_index

TOLERANCE = 1e-3


def speech_like(num_samples: int, sample_rate: int, seed: int) -> torch.Tensor:
    """A harmonic series with gliding pitch under a syllable envelope, plus faint noise: (n,)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    pitch = (100 + 50 * (seed % 3)) * (1 + 0.2 * torch.sin(2 * math.pi * 0.8 * t))
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / sample_rate
    harmonics = sum(torch.sin(k * phase) / k for k in range(1, 20) if k * pitch.max() < sample_rate / 2)
    envelope = torch.sin(math.pi * 4 * t).abs() ** 1.5
    noise = torch.randn(num_samples, generator=generator, dtype=torch.float64)
    return (0.1 * harmonics * envelope + 0.003 * noise).float()


def padded_batch(lengths, sample_rate, extra_padding=37, dtype=torch.float32):
    """(B, T) zero-padded speech-like batch and its (B,) lengths; the batch is wider than
    its longest utterance, as a collate with bucketing may produce."""
    wav = torch.zeros(len(lengths), max(lengths) + extra_padding, dtype=dtype)
    for b, n in enumerate(lengths):
        if n > 0:
            wav[b, :n] = speech_like(n, sample_rate, seed=b).to(dtype)
    return wav, torch.tensor(lengths)


def reference(wav, lengths, **options):
    """torchaudio's fbank per utterance: a list of (T_b, D)."""
    return [torchaudio_fbank(wav[b : b + 1, :n], **options) for b, n in enumerate(lengths.tolist())]


def assert_matches(feats, feat_lengths, references):
    assert feats.shape[1] == max(ref.shape[0] for ref in references)
    for b, ref in enumerate(references):
        assert feat_lengths[b].item() == ref.shape[0]
        torch.testing.assert_close(feats[b, : ref.shape[0]], ref, rtol=0, atol=TOLERANCE)
        assert (feats[b, ref.shape[0] :] == 0).all(), "frames past the utterance must be zero"


@pytest.mark.parametrize("snip_edges", [True, False])
@pytest.mark.parametrize("sample_rate,n_mels", [(16000, 80), (8000, 23), (16000, 23), (22050, 40)])
def test_matches_torchaudio_per_utterance(sample_rate, n_mels, snip_edges):
    lengths = [sample_rate, sample_rate // 3 + 17, sample_rate * 3 // 4 + 5, int(0.03 * sample_rate)]
    wav, lengths = padded_batch(lengths, sample_rate)
    fbank = Fbank(sample_rate=sample_rate, n_mels=n_mels, snip_edges=snip_edges)
    feats, feat_lengths = fbank(wav, lengths)
    expected = reference(
        wav, lengths, sample_frequency=sample_rate, num_mel_bins=n_mels, snip_edges=snip_edges
    )
    assert_matches(feats, feat_lengths, expected)


@pytest.mark.parametrize(
    "options",
    [
        dict(window="hamming", use_energy=True, energy_floor=0.0),
        dict(window="hanning", use_energy=True, energy_floor=1.0, preemphasis=0.0),
        dict(window="rectangular", remove_dc_offset=False, round_to_power_of_two=False),
        dict(window="blackman", low_freq=100.0, high_freq=-400.0, frame_shift_ms=12.5),
    ],
    ids=["hamming-energy", "hanning-floor", "rectangular-raw", "blackman-band"],
)
def test_matches_torchaudio_other_options(options):
    wav, lengths = padded_batch([12000, 7001, 16000], 16000)
    fbank = Fbank(n_mels=40, **options)
    names = dict(
        window="window_type", preemphasis="preemphasis_coefficient",
        frame_shift_ms="frame_shift", frame_length_ms="frame_length",
    )
    peer_options = {names.get(key, key): value for key, value in options.items()}
    feats, feat_lengths = fbank(wav, lengths)
    assert_matches(feats, feat_lengths, reference(wav, lengths, num_mel_bins=40, **peer_options))


def test_float64_and_input_scale():
    wav, lengths = padded_batch([9000, 16000], 16000, dtype=torch.float64)
    feats, feat_lengths = Fbank(input_scale=32768.0, snip_edges=False)(wav, lengths)
    assert feats.dtype == torch.float64
    expected = reference(wav * 32768.0, lengths, num_mel_bins=80, snip_edges=False)
    assert_matches(feats, feat_lengths, expected)


def test_padding_content_and_width_do_not_matter():
    wav, lengths = padded_batch([8000, 5000, 3000], 16000, extra_padding=0)
    fbank = Fbank()
    feats, feat_lengths = fbank(wav, lengths)
    noisy = torch.cat([wav, torch.zeros(3, 500)], dim=1)
    noisy[torch.arange(noisy.shape[1]) >= lengths.unsqueeze(1)] = 0.7  # garbage in padding
    for snip_edges in (True, False):
        fbank = Fbank(snip_edges=snip_edges)
        torch.testing.assert_close(fbank(noisy, lengths), fbank(wav, lengths), rtol=0, atol=0)


def test_shorter_than_one_frame_gives_zero_frames():
    wav, lengths = padded_batch([399, 16000, 0], 16000)
    feats, feat_lengths = Fbank()(wav, lengths)
    assert feat_lengths.tolist() == [0, 98, 0]
    assert (feats[0] == 0).all() and (feats[2] == 0).all()
    # A batch with no whole frame at all still has the right rank and width.
    feats, feat_lengths = Fbank()(wav[:1, :399], lengths[:1])
    assert feats.shape == (1, 0, 80) and feat_lengths.tolist() == [0]


def kaldi_mirrored_frames_reference(signal, num_frames, frame_length, frame_shift, **options):
    """Kaldi's snip_edges=false framing written out sample by sample (feature-window.cc):
    extend the signal by mirroring, then frame it with snip_edges=true."""
    n = signal.numel()
    first = frame_shift // 2 - frame_length // 2
    extended = []
    for s in range(first, first + (num_frames - 1) * frame_shift + frame_length):
        while s < 0 or s >= n:  # Kaldi's loop; repeats for signals shorter than the frame
            s = -s - 1 if s < 0 else 2 * n - 1 - s
        extended.append(signal[s])
    return torchaudio_fbank(torch.stack(extended)[None], snip_edges=True, **options)


def test_no_snip_edges_shorter_than_a_frame_mirrors_like_kaldi():
    # torchaudio refuses signals shorter than a frame; Kaldi mirrors them repeatedly.
    wav, lengths = padded_batch([300, 100, 1000], 16000)
    feats, feat_lengths = Fbank(n_mels=23, snip_edges=False)(wav, lengths)
    assert feat_lengths.tolist() == [2, 1, 6]  # (n + shift // 2) // shift
    for b, n in enumerate(lengths.tolist()):
        expected = kaldi_mirrored_frames_reference(
            wav[b, :n], feat_lengths[b].item(), 400, 160, num_mel_bins=23
        )
        torch.testing.assert_close(feats[b, : feat_lengths[b]], expected, rtol=0, atol=TOLERANCE)


def test_reflect_index_repeats_edge_sample():
    index = torch.arange(-4, 8)
    assert reflect_index(index, torch.tensor([3])).tolist() == [[2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1]]


def test_lengths_default_to_full_width():
    wav, _ = padded_batch([4000, 4000], 16000, extra_padding=0)
    feats, feat_lengths = Fbank()(wav)
    assert feat_lengths.tolist() == [23, 23] and feats.shape == (2, 23, 80)


def test_buffers_stay_out_of_state_dict():
    fbank = Fbank()
    assert dict(fbank.state_dict()) == {}
    assert {name for name, _ in fbank.named_buffers()} == {"mel_banks", "window"}


def test_dither_only_in_training_and_only_on_real_frames():
    wav, lengths = padded_batch([4000, 2000], 16000)
    fbank = Fbank(dither=1.0, input_scale=32768.0)
    fbank.eval()
    torch.testing.assert_close(fbank(wav, lengths), fbank(wav, lengths), rtol=0, atol=0)
    fbank.train()
    torch.manual_seed(0)
    first, feat_lengths = fbank(wav, lengths)
    second, _ = fbank(wav, lengths)
    assert not torch.equal(first, second)
    assert (first[1, feat_lengths[1] :] == 0).all()
    clean, _ = fbank.eval()(wav, lengths)
    # A one-LSB dither barely moves the log-mel of audible speech.
    assert (first - clean)[0].abs().median() < 0.05


def test_gradient_reaches_the_waveform():
    wav, lengths = padded_batch([3000, 2000], 16000)
    wav.requires_grad_(True)
    feats, _ = Fbank()(wav, lengths)
    feats.sum().backward()
    assert torch.isfinite(wav.grad).all()
    assert (wav.grad[1, 2000:] == 0).all(), "padding must not influence the features"
