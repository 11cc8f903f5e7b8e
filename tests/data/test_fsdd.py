"""Real speech: the Free Spoken Digit Dataset recordings in ../shared/data/fsdd load,
validate and featurize (skipped where that folder is absent)."""
from __future__ import annotations

import re

import pytest
import torch

from fixtures import FSDD
from speechlm.data.collate import collate_audio
from speechlm.data.dataset import AudioDataset
from speechlm.data.digits import DIGITS
from speechlm.data.kaldi_dir import DataDir
from speechlm.data.sampler import DurationBucketSampler
from speechlm.data.validate import validate_data_dir
from speechlm.features import Fbank

pytestmark = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")




def fsdd_data_dir(out, per_speaker_digit: int = 2):
    """Kaldi dir over a slice of FSDD: utterance `speaker-digit-index`, 8 kHz WAVs."""
    wav_scp, text, utt2spk = {}, {}, {}
    for path in sorted((FSDD / "recordings").glob("*.wav")):
        digit, speaker, index = re.fullmatch(r"(\d)_(\w+)_(\d+)", path.stem).groups()
        if int(index) >= per_speaker_digit:
            continue
        utt = f"{speaker}-{digit}-{int(index):02d}"
        wav_scp[utt], text[utt], utt2spk[utt] = str(path), DIGITS[int(digit)], speaker
    return DataDir(wav_scp=wav_scp, utt2spk=utt2spk, text=text).save(out)


def test_fsdd_validates_loads_and_featurizes(tmp_path):
    d = fsdd_data_dir(tmp_path / "fsdd")
    assert validate_data_dir(d, audio=True, sample_rate=8000) == []
    ds = AudioDataset(d, sample_rate=16000)  # resampled 8 kHz -> 16 kHz on load
    assert len(ds) == 5 * 10 * 2 and 0.1 < min(ds.durations) and max(ds.durations) < 2.5
    sampler = DurationBucketSampler(ds.durations, max_seconds=8.0, shuffle=False)
    fbank = Fbank(sample_rate=16000, n_mels=80)
    seen = 0
    for batch_ids in sampler:
        batch = collate_audio([ds[i] for i in batch_ids])
        feats, lens = fbank(batch["audio"], batch["audio_lens"])
        assert feats.shape[-1] == 80 and torch.isfinite(feats).all()
        assert (lens == fbank.num_frames(batch["audio_lens"])).all()
        # real speech has energy: the loudest frame is far above the padding floor
        assert feats[0, : lens[0]].max() > feats[0, : lens[0]].min() + 5
        seen += len(batch_ids)
    assert seen == len(ds)


def test_fsdd_8k_features_match_torchaudio(tmp_path):
    import torchaudio
    d = fsdd_data_dir(tmp_path / "fsdd", per_speaker_digit=1)
    ds = AudioDataset(d, sample_rate=8000)
    batch = collate_audio([ds[i] for i in range(8)])
    fbank = Fbank(sample_rate=8000, n_mels=40)
    feats, lens = fbank(batch["audio"], batch["audio_lens"])
    for b in range(8):
        ref = torchaudio.compliance.kaldi.fbank(batch["audio"][b : b + 1, : batch["audio_lens"][b]],
                                                sample_frequency=8000, num_mel_bins=40, dither=0.0)
        assert lens[b] == ref.shape[0]
        assert (feats[b, : lens[b]] - ref).abs().max() < 1e-3
