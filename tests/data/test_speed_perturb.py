"""Speed perturbation of a data dir (Kaldi's perturb_data_dir_speed_3way.sh)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speechlm.data.audio import read_audio
from speechlm.data.kaldi_dir import DataDir
from speechlm.data.speed_perturb import perturb_audio, perturb_speed
from speechlm.data.validate import validate_data_dir


def test_three_way_ids_durations_and_audio(data_dir, tmp_path):
    dd = DataDir.load(data_dir)
    sp = perturb_speed(dd, audio_dir=tmp_path / "sp_wav")
    assert len(sp) == 18
    assert sp.utt2spk["sp0.9-spkA-utt1"] == "sp0.9-spkA" and sp.utt2spk["spkA-utt1"] == "spkA"
    assert sp.text["sp1.1-spkB-utt2"] == dd.text["spkB-utt2"]
    assert sp.utt2dur["sp0.9-spkA-utt0"] == pytest.approx(0.5 / 0.9)
    out = sp.save(tmp_path / "train_sp")
    # utt2dur must agree with the audio actually written (validator measures it)
    assert validate_data_dir(out, audio=True, sample_rate=16000) == []
    slow, sr = read_audio(sp.wav_scp["sp0.9-spkB-utt1"])
    assert sr == 16000 and len(slow) == pytest.approx(0.85 * 16000 / 0.9, abs=2)


def test_perturbation_shifts_pitch_like_sox_speed():
    sr = 16000
    t = torch.arange(sr) / sr
    tone = torch.sin(2 * np.pi * 440 * t)
    fast = perturb_audio(tone, sr, 1.1)
    spectrum = torch.fft.rfft(fast).abs()
    peak_hz = spectrum.argmax().item() * sr / len(fast)
    assert len(fast) == pytest.approx(sr / 1.1, abs=1)
    assert peak_hz == pytest.approx(484, abs=3)


def test_sox_mode_writes_kaldi_pipes(data_dir):
    sp = perturb_speed(DataDir.load(data_dir), factors=(0.9, 1.0), sox=True)
    entry = sp.wav_scp["sp0.9-spkA-utt0"]
    assert entry.startswith("sox -t wav ") and entry.endswith(" speed 0.9 |")


@pytest.mark.skipif(__import__("shutil").which("sox") is None, reason="sox not installed (apt-get install sox); parity with sox's speed effect not checked")
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_matches_sox_speed_effect(tmp_path, factor):
    from fixtures import write_wav
    wav = write_wav(tmp_path / "a.wav", 1.0)
    x, sr = read_audio(str(wav))
    ref, _ = read_audio(f"sox -t wav {wav} -t wav - speed {factor} |")
    ours = perturb_audio(torch.from_numpy(x), sr, factor).numpy()
    assert abs(len(ours) - len(ref)) <= 1
    n = min(len(ours), len(ref))
    assert np.corrcoef(ours[:n], ref[:n])[0, 1] > 0.999
