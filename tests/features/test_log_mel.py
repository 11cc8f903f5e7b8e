"""`LogMelFbank` against ESPnet's `DefaultFrontend` (the peer) on the same padded batch."""

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from espnet2.asr.frontend.default import DefaultFrontend

from speechlm.features import LogMelFbank

TOLERANCE = 1e-4  # observed: at most 2e-6 (1e-6 in all but the rectangular-window case)


def padded_batch(lengths, sample_rate, extra_padding=0, seed=0):
    """(B, T) zero-padded batch of harmonic tones with a little noise, and (B,) lengths."""
    g = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths) + extra_padding)
    for b, n in enumerate(lengths):
        t = torch.arange(n) / sample_rate
        tone = sum(torch.sin(2 * torch.pi * k * (120 + 30 * b) * t) / k for k in range(1, 8))
        wav[b, :n] = 0.1 * tone + 0.003 * torch.randn(n, generator=g)
    return wav, torch.tensor(lengths)


def espnet_conf_to_ours(conf: dict) -> dict:
    return {("sample_rate" if k == "fs" else k): v for k, v in conf.items()}


@pytest.mark.parametrize("conf", [
    dict(),  # DefaultFrontend's defaults: 16 kHz, n_fft 512, hop 128, 80 mels
    dict(fs=16000, n_fft=512, win_length=400, hop_length=160),
    dict(fs=8000, n_fft=256, win_length=200, hop_length=80, n_mels=40),
    dict(fs=16000, n_fft=400, hop_length=160, n_mels=40, fmin=20, fmax=7600),
    dict(fs=16000, n_fft=512, hop_length=160, n_mels=80, htk=True, window="hamming"),
    dict(fs=16000, n_fft=512, win_length=320, hop_length=160, window=None, normalized=True),
    dict(fs=16000, n_fft=512, hop_length=160, center=False),
    dict(fs=11025, n_fft=511, hop_length=110, n_mels=64),  # odd rate and n_fft
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_matches_espnet_default_frontend(conf):
    fs = conf.get("fs", 16000)
    lengths = [fs, fs // 3 + 17, fs * 3 // 4 + 5, fs // 10]
    wav, lengths = padded_batch(lengths, fs, extra_padding=0)
    ref = DefaultFrontend(**conf).eval()
    ours = LogMelFbank(**espnet_conf_to_ours(conf))
    with torch.no_grad():
        expected, expected_lengths = ref(wav, lengths)
    feats, feat_lengths = ours(wav, lengths)
    assert feat_lengths.tolist() == expected_lengths.tolist()
    assert feats.shape == expected.shape and ours.output_dim == ref.output_size()
    torch.testing.assert_close(feats, expected, rtol=0, atol=TOLERANCE)  # padding frames: both 0
    assert (feats[3, feat_lengths[3]:] == 0).all() and feat_lengths[3] < feats.shape[1]


def test_wider_batch_and_single_utterance_match_espnet():
    """Extra padding past the longest utterance, and one utterance alone (no lengths)."""
    wav, lengths = padded_batch([16000, 9000], 16000, extra_padding=300)
    ref, ours = DefaultFrontend(hop_length=160).eval(), LogMelFbank(hop_length=160)
    with torch.no_grad():
        expected, expected_lengths = ref(wav, lengths)
        alone, _ = ref(wav[1:, :9000], torch.tensor([9000]))
    feats, feat_lengths = ours(wav, lengths)
    assert feat_lengths.tolist() == expected_lengths.tolist() and feats.shape == expected.shape
    torch.testing.assert_close(feats, expected, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(ours(wav[1:, :9000])[0], alone, rtol=0, atol=TOLERANCE)


def test_hydra_config_builds_the_frontend():
    cfg = OmegaConf.load(__file__.rsplit("/tests/", 1)[0] + "/conf/frontend/espnet_logmel.yaml")
    frontend = hydra.utils.instantiate(cfg)
    assert isinstance(frontend, LogMelFbank) and cfg.sample_rate == 16000 and cfg.n_mels == 80
    assert frontend.state_dict() == {}  # nothing derived from the options goes into checkpoints
    wav, lengths = padded_batch([4000, 3000], 16000, extra_padding=0)
    with torch.no_grad():
        expected, _ = DefaultFrontend().eval()(wav, lengths)
    torch.testing.assert_close(frontend(wav, lengths)[0], expected, rtol=0, atol=TOLERANCE)


def test_unknown_window_is_refused():
    with pytest.raises(ValueError, match="no welch_window"):
        LogMelFbank(window="welch")
    with pytest.raises(ValueError, match="win_length"):
        LogMelFbank(n_fft=256, win_length=400)
