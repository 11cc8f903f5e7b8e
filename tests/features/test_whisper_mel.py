"""`WhisperLogMel` / `log_mel_spectrogram` against openai-whisper's `log_mel_spectrogram` (the peer)."""

from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
import whisper
from omegaconf import OmegaConf

from speechlm.features import WhisperLogMel
from speechlm.features.whisper_mel import log_mel_spectrogram, mel_filters

TOLERANCE = 1e-4  # observed: 0 (bit-identical) on CPU
SR = 16000
LENGTHS = [SR * 3 + 77, SR // 2 + 5, 2 * SR + 160, 401]  # odd lengths, one barely over n_fft // 2


def padded_batch(lengths, extra_padding=0, seed=0):
    """(B, T) batch of harmonic tones with a little noise (loud to quiet rows, so the max - 8
    clamp bites), garbage (not zeros) past each length, and (B,) lengths."""
    g = torch.Generator().manual_seed(seed)
    wav = torch.randn(len(lengths), max(lengths) + extra_padding, generator=g)  # garbage padding
    for b, n in enumerate(lengths):
        t = torch.arange(n) / SR
        tone = sum(torch.sin(2 * torch.pi * k * (110 + 40 * b) * t) / k for k in range(1, 8))
        wav[b, :n] = 10.0 ** -b * (0.1 * tone + 0.003 * torch.randn(n, generator=g))
    return wav, torch.tensor(lengths)


def whisper_row(row: torch.Tensor, n_mels: int, chunk: bool) -> torch.Tensor:
    """(T', n_mels) by whisper itself."""
    audio = whisper.pad_or_trim(row) if chunk else row
    return whisper.log_mel_spectrogram(audio, n_mels=n_mels).T


def test_filterbank_is_whispers():
    path = Path(whisper.__file__).parent / "assets" / "mel_filters.npz"
    with np.load(path) as npz:
        for n_mels in (80, 128):
            ours = mel_filters(n_mels)
            assert ours.dtype == npz[f"mel_{n_mels}"].dtype
            np.testing.assert_allclose(ours, npz[f"mel_{n_mels}"], rtol=0, atol=1e-7)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("padding", [0, 1234])
def test_function_matches_whisper(n_mels, padding):
    wav, _ = padded_batch([SR * 2 + 33])
    expected = whisper.log_mel_spectrogram(wav[0], n_mels=n_mels, padding=padding)
    ours = log_mel_spectrogram(wav[0], n_mels=n_mels, padding=padding)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() <= TOLERANCE
    # numpy in, and a batch (one max over all rows, as whisper's)
    assert (log_mel_spectrogram(wav[0].numpy(), n_mels) - whisper.log_mel_spectrogram(wav[0].numpy(), n_mels)).abs().max() <= TOLERANCE
    batch = padded_batch([SR, SR], seed=3)[0]
    assert (log_mel_spectrogram(batch, n_mels) - whisper.log_mel_spectrogram(batch, n_mels)).abs().max() <= TOLERANCE


@pytest.mark.parametrize("n_mels", [80, 128])
def test_30s_windows_match_whisper_per_row(n_mels):
    wav, lengths = padded_batch(LENGTHS)
    frontend = WhisperLogMel(n_mels=n_mels)
    feats, feat_lengths = frontend(wav, lengths)
    assert feats.shape == (len(LENGTHS), 3000, n_mels)
    assert feat_lengths.tolist() == [3000] * len(LENGTHS)
    for b, n in enumerate(LENGTHS):
        expected = whisper_row(wav[b, :n], n_mels, chunk=True)
        assert (feats[b] - expected).abs().max() <= TOLERANCE, b


def test_30s_windows_trim_long_audio():
    wav, lengths = padded_batch([SR * 31 + 5, SR * 2])
    feats, _ = WhisperLogMel()(wav, lengths)
    for b in range(2):
        expected = whisper_row(wav[b, : lengths[b]], 80, chunk=True)
        assert (feats[b] - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("n_mels", [80, 128])
def test_dynamic_lengths_match_whisper_per_row(n_mels):
    wav, lengths = padded_batch(LENGTHS, extra_padding=555)
    frontend = WhisperLogMel(n_mels=n_mels, chunk_seconds=None)
    feats, feat_lengths = frontend(wav, lengths)
    assert feat_lengths.tolist() == [n // 160 for n in LENGTHS]
    assert feats.shape == (len(LENGTHS), wav.shape[1] // 160, n_mels)
    for b, n in enumerate(LENGTHS):
        expected = whisper_row(wav[b, :n], n_mels, chunk=False)
        assert expected.shape[0] == feat_lengths[b]
        assert (feats[b, :n // 160] - expected).abs().max() <= TOLERANCE, b  # its own end and max
        assert not feats[b, n // 160:].any()  # padded frames are 0
    alone, _ = frontend(wav[1:2, : LENGTHS[1]])  # does not depend on the batch
    assert torch.equal(alone[0], feats[1, : LENGTHS[1] // 160])


def test_config_and_buffers():
    frontend = hydra.utils.instantiate(OmegaConf.load("conf/frontend/whisper_mel.yaml"))
    assert isinstance(frontend, WhisperLogMel)
    assert (frontend.n_mels, frontend.sample_rate, frontend.chunk_seconds) == (80, 16000, 30.0)
    assert frontend.state_dict() == {}  # filterbank and window are derived, not saved
    assert frontend.output_dim == 80


def test_bad_lengths_are_refused():
    wav, lengths = padded_batch([SR, SR // 2])
    frontend = WhisperLogMel(chunk_seconds=None)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 16000\]"):
        frontend(wav, torch.tensor([SR + 1, SR // 2]))  # longer than the wav
    with pytest.raises(ValueError, match="lengths must lie"):
        frontend(wav, torch.tensor([-1, SR // 2]))
    with pytest.raises(ValueError, match=r"lengths must be \(2,\)"):
        frontend(wav, torch.tensor([SR]))  # one length for two rows
    with pytest.raises(ValueError, match="more than n_fft // 2 = 200 samples"):
        frontend(wav, torch.tensor([SR, 200]))  # whisper's torch.stft refuses it too
    with pytest.raises(ValueError, match=r"wav must be \(B, T\)"):
        frontend(wav[0], lengths[:1])
    # a 30-s window pads anything, even an empty utterance, as whisper.pad_or_trim does
    feats, _ = WhisperLogMel()(wav, torch.tensor([0, SR // 2]))
    assert (feats[0] - whisper_row(wav[0, :0], 80, chunk=True)).abs().max() <= TOLERANCE
